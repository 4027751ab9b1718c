"""
A throwaway certificate authority and the server and client certificates
it signed, for TLS tests on loopback.
"""

import datetime
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(obj) -> bytes:
    if hasattr(obj, "private_bytes"):
        return obj.private_bytes(serialization.Encoding.PEM,
                                 serialization.PrivateFormat.TraditionalOpenSSL,
                                 serialization.NoEncryption())
    return obj.public_bytes(serialization.Encoding.PEM)


def makeCertificates(directory: str, hostname: str = "localhost"):
    """
    @return: the path of the CA certificate (PEM), and the server's
        certificate and key (PEM bytes) for C{hostname}.
    """
    caPath, serverPEM, _, _ = makeCertificatesWithClient(directory, hostname)
    return caPath, serverPEM


def makeCertificatesWithClient(directory: str, hostname: str = "localhost"):
    """
    L{makeCertificates}, and a client certificate from the same CA.

    @return: the CA certificate's path, the server's certificate and key
        (PEM bytes), and the paths of the client's certificate and key.
    """
    now = datetime.datetime.now(datetime.timezone.utc)
    caKey = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder()
          .subject_name(_name("glancetx test CA")).issuer_name(_name("glancetx test CA"))
          .public_key(caKey.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False),
                         critical=True)
          .sign(caKey, hashes.SHA256()))

    def leaf(name: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(_name(name)).issuer_name(ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(caKey, hashes.SHA256()))
        return _pem(cert), _pem(key)

    serverCert, serverKey = leaf(hostname)
    clientCert, clientKey = leaf("glancetx test client")
    os.makedirs(directory, exist_ok=True)
    paths = {}
    for name, data in [("ca.pem", _pem(ca)), ("client.pem", clientCert),
                       ("client.key", clientKey)]:
        paths[name] = os.path.join(directory, name)
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths["ca.pem"], serverCert + serverKey, paths["client.pem"], paths["client.key"]
