"""
Tests for L{glancetx.auth}.
"""

import json
import os

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import TestCase
from twisted.web.http_headers import Headers

from glancetx import auth, errors
from glancetx.auth import (
    KeystoneHeaders,
    NoAuth,
    TokenFile,
    Unauthorized,
    makeAuth,
    parseTokens,
)
from glancetx.context import RequestContext, noauthContext
from glancetx.errors import ConfigError
from glancetx.policy import Policy


def headers(**values):
    """
    Headers from keyword arguments: C{X_User_Id="u"} is C{X-User-Id: u}; a
    list gives the header several times.
    """
    h = Headers()
    for name, value in values.items():
        for v in value if isinstance(value, list) else [value]:
            h.addRawHeader(name.replace("_", "-").encode("ascii"), v.encode("utf-8"))
    return h


def confirmed(**values):
    return headers(X_Identity_Status="Confirmed", **values)


def writeFile(path, text, mtime):
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


class NoAuthTests(TestCase):
    def test_everyRequestIsNoauthAdmin(self):
        context = NoAuth().authenticate(Headers())
        self.assertEqual(context, noauthContext())
        self.assertTrue(context.is_admin)
        self.assertEqual(NoAuth().authenticate(confirmed(X_Roles="x")), noauthContext())


class KeystoneHeadersTests(TestCase):
    def setUp(self):
        self.auth = KeystoneHeaders(Policy.defaults())

    def test_confirmed(self):
        context = self.auth.authenticate(
            confirmed(
                X_User_Id="u1",
                X_Tenant_Id="t1",
                X_Roles="member, reader",
                X_Auth_Token="tok",
            )
        )
        self.assertEqual(
            context,
            RequestContext(
                user="u1",
                tenant="t1",
                roles=frozenset({"member", "reader"}),
                is_admin=False,
                read_only=False,
                auth_token="tok",
            ),
        )
        self.assertEqual(context.auth_token, "tok")

    def test_missingStatus(self):
        e = self.assertRaises(Unauthorized, self.auth.authenticate, headers(X_User_Id="u"))
        self.assertEqual(e.message, "Identity not confirmed")

    def test_invalidStatus(self):
        for status in ["Invalid", "confirmed", ""]:
            self.assertRaises(
                Unauthorized,
                self.auth.authenticate,
                headers(X_Identity_Status=status, X_Roles="admin"),
            )

    def test_statusTwice(self):
        self.assertRaises(
            Unauthorized,
            self.auth.authenticate,
            headers(X_Identity_Status=["Confirmed", "Confirmed"]),
        )

    def test_projectIdPreferred(self):
        context = self.auth.authenticate(confirmed(X_Project_Id="p", X_Tenant_Id="t"))
        self.assertEqual(context.tenant, "p")
        context = self.auth.authenticate(confirmed(X_Tenant_Id="t"))
        self.assertEqual(context.tenant, "t")

    def test_noTenant(self):
        context = self.auth.authenticate(confirmed(X_User_Id="u"))
        self.assertIsNone(context.tenant)
        self.assertEqual(context.roles, frozenset())

    def test_rolesStrippedLoweredBlanksDropped(self):
        context = self.auth.authenticate(confirmed(X_Roles=" Member ,,READER, "))
        self.assertEqual(context.roles, frozenset({"member", "reader"}))

    def test_repeatedRolesJoined(self):
        context = self.auth.authenticate(confirmed(X_Roles=["a,b", "c"]))
        self.assertEqual(context.roles, frozenset({"a", "b", "c"}))

    def test_userTwiceRefused(self):
        self.assertRaises(
            Unauthorized, self.auth.authenticate, confirmed(X_User_Id=["a", "b"])
        )

    def test_notUtf8Refused(self):
        h = confirmed()
        h.addRawHeader(b"X-User-Id", b"\xff")
        self.assertRaises(Unauthorized, self.auth.authenticate, h)

    def test_longIdentityRefused(self):
        """
        A user or project id longer than the 255 characters an owner or a
        member column holds is refused, not carried into SQL; 255 is fine.
        """
        for name in ("X_User_Id", "X_Project_Id", "X_Tenant_Id"):
            e = self.assertRaises(Unauthorized, self.auth.authenticate,
                                  confirmed(**{name: "x" * 256}))
            self.assertIn("longer than 255", str(e))
            self.auth.authenticate(confirmed(**{name: "x" * 255}))

    def test_storageTokenFallback(self):
        context = self.auth.authenticate(confirmed(X_Storage_Token="old"))
        self.assertEqual(context.auth_token, "old")

    def test_adminRole(self):
        context = self.auth.authenticate(confirmed(X_Roles="Admin"))
        self.assertTrue(context.is_admin)

    def test_configuredAdminRole(self):
        policy = Policy.fromText(json.dumps({"context_is_admin": "!"}))
        keystone = KeystoneHeaders(policy, adminRole="Cloud_Admin")
        self.assertTrue(keystone.authenticate(confirmed(X_Roles="cloud_admin")).is_admin)
        self.assertFalse(keystone.authenticate(confirmed(X_Roles="admin")).is_admin)

    def test_adminFromPolicy(self):
        policy = Policy.fromText(json.dumps({"context_is_admin": "tenant:ops"}))
        keystone = KeystoneHeaders(policy, adminRole=None)
        self.assertTrue(keystone.authenticate(confirmed(X_Tenant_Id="ops")).is_admin)
        self.assertFalse(keystone.authenticate(confirmed(X_Tenant_Id="dev")).is_admin)
        # With admin_role disabled and the policy not naming it, "admin" is
        # just a role.
        self.assertFalse(keystone.authenticate(confirmed(X_Roles="admin")).is_admin)

    def test_readOnlyRole(self):
        keystone = KeystoneHeaders(Policy.defaults(), readOnlyRole="Observer")
        self.assertTrue(keystone.authenticate(confirmed(X_Roles="observer")).read_only)
        self.assertFalse(keystone.authenticate(confirmed(X_Roles="member")).read_only)

    def test_noReadOnlyRoleByDefault(self):
        context = self.auth.authenticate(confirmed(X_Roles="observer,reader,read_only"))
        self.assertFalse(context.read_only)


TOKENS = """\
# token user tenant roles
secret-one  alice  t1  member,Reader

secret-two  bob    t2  admin
   # indented comment
secret-three carol t3
"""


class ParseTokensTests(TestCase):
    def test_parsed(self):
        entries = parseTokens(TOKENS)
        self.assertEqual(len(entries), 3)
        users = {e.user: (e.tenant, e.roles) for e in entries.values()}
        self.assertEqual(
            users,
            {
                "alice": ("t1", frozenset({"member", "reader"})),
                "bob": ("t2", frozenset({"admin"})),
                "carol": ("t3", frozenset()),
            },
        )

    def test_plainTokensNotKept(self):
        entries = parseTokens(TOKENS)
        self.assertNotIn("secret-one", repr(entries))
        for key in entries:
            self.assertIsInstance(key, bytes)
            self.assertEqual(len(key), 32)

    def test_tooFewFields(self):
        e = self.assertRaises(ValueError, parseTokens, "\nsecret alice\n")
        self.assertIn("line 2", str(e))
        self.assertNotIn("secret", str(e))

    def test_tooManyFields(self):
        self.assertRaises(ValueError, parseTokens, "s a t r extra\n")

    def test_repeatedToken(self):
        e = self.assertRaises(ValueError, parseTokens, "s a t r\ns b u r\n")
        self.assertIn("line 2", str(e))


class TokenFileTests(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1000)
        writeFile(self.path, TOKENS, 1)
        self.auth = TokenFile(self.path, Policy.defaults(), self.clock)

    def authenticate(self, token):
        return self.auth.authenticate(headers(X_Auth_Token=token))

    def test_knownToken(self):
        context = self.authenticate("secret-one")
        self.assertEqual(
            context,
            RequestContext(
                user="alice",
                tenant="t1",
                roles=frozenset({"member", "reader"}),
                auth_token="secret-one",
            ),
        )
        self.assertFalse(context.is_admin)

    def test_adminToken(self):
        self.assertTrue(self.authenticate("secret-two").is_admin)

    def test_noRoles(self):
        self.assertEqual(self.authenticate("secret-three").roles, frozenset())

    def test_missingToken(self):
        e = self.assertRaises(Unauthorized, self.auth.authenticate, Headers())
        self.assertEqual(e.message, "Missing X-Auth-Token")
        self.assertRaises(Unauthorized, self.authenticate, "")

    def test_unknownToken(self):
        for token in ["secret", "secret-on", "secret-onex", "SECRET-ONE", "alice"]:
            e = self.assertRaises(Unauthorized, self.authenticate, token)
            self.assertEqual(e.message, "Invalid X-Auth-Token")

    def test_tokenTwice(self):
        self.assertRaises(
            Unauthorized,
            self.auth.authenticate,
            headers(X_Auth_Token=["secret-one", "secret-two"]),
        )

    def test_identityHeadersIgnored(self):
        """
        Keystone's headers do not count under the tokens strategy.
        """
        self.assertRaises(
            Unauthorized,
            self.auth.authenticate,
            confirmed(X_User_Id="alice", X_Roles="admin"),
        )
        context = self.auth.authenticate(
            confirmed(X_Auth_Token="secret-one", X_Roles="admin")
        )
        self.assertFalse(context.is_admin)

    def test_comparedInConstantTime(self):
        calls = []
        real = auth.hmac.compare_digest

        def recording(a, b):
            calls.append((a, b))
            return real(a, b)

        self.patch(auth.hmac, "compare_digest", recording)
        self.authenticate("secret-one")
        self.assertEqual(len(calls), 1)
        # Digests are compared, never the tokens themselves.
        self.assertNotIn(b"secret-one", calls[0])
        self.assertEqual(len(calls[0][0]), 32)

    def test_reloadOnChange(self):
        writeFile(self.path, "new-token dave t4 member\n", 2)
        self.clock.advance(0.5)
        self.assertEqual(self.authenticate("secret-one").user, "alice")
        self.clock.advance(0.5)
        with capturedLogs():
            self.assertEqual(self.authenticate("new-token").user, "dave")
        self.assertRaises(Unauthorized, self.authenticate, "secret-one")

    def test_malformedReloadKeepsOldTokens(self):
        writeFile(self.path, "new-token dave\n", 2)
        self.clock.advance(1)
        with capturedLogs() as events:
            self.assertEqual(self.authenticate("secret-one").user, "alice")
        self.assertRaises(Unauthorized, self.authenticate, "new-token")
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("line 1", errors[0]["reason"])
        self.assertNotIn("new-token", repr(events))

    def test_malformedAtStart(self):
        path = self.mktemp()
        writeFile(path, "lonely\n", 1)
        e = self.assertRaises(ConfigError, TokenFile, path, Policy.defaults(), self.clock)
        self.assertTrue(str(e).startswith("tokens_file: line 1"), str(e))

    def test_missingAtStart(self):
        e = self.assertRaises(
            ConfigError, TokenFile, self.mktemp(), Policy.defaults(), self.clock
        )
        self.assertTrue(str(e).startswith("tokens_file: cannot read"), str(e))

    def test_readOnlyRole(self):
        tokens = TokenFile(self.path, Policy.defaults(), self.clock, readOnlyRole="reader")
        self.assertTrue(tokens.authenticate(headers(X_Auth_Token="secret-one")).read_only)
        self.assertFalse(tokens.authenticate(headers(X_Auth_Token="secret-two")).read_only)


class MakeAuthTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.policy = Policy.defaults()

    def make(self, **conf):
        return makeAuth(conf, self.policy, self.clock)

    def test_defaultIsNoauth(self):
        self.assertIsInstance(self.make(), NoAuth)

    def test_strategies(self):
        self.assertIsInstance(self.make(auth_strategy="noauth"), NoAuth)
        self.assertIsInstance(self.make(auth_strategy="Keystone"), KeystoneHeaders)
        path = self.mktemp()
        writeFile(path, TOKENS, 1)
        tokens = self.make(auth_strategy="tokens", tokens_file=path)
        self.assertIsInstance(tokens, TokenFile)
        self.assertEqual(
            tokens.authenticate(headers(X_Auth_Token="secret-two")).user, "bob"
        )

    def test_unknownStrategy(self):
        e = self.assertRaises(ConfigError, self.make, auth_strategy="ldap")
        self.assertTrue(str(e).startswith("auth_strategy: "), str(e))
        # Empty is not the default (noauth, every caller an admin).
        e = self.assertRaises(ConfigError, self.make, auth_strategy=" ")
        self.assertTrue(str(e).startswith("auth_strategy: must not be empty"), str(e))

    def test_tokensNeedsFile(self):
        e = self.assertRaises(ConfigError, self.make, auth_strategy="tokens")
        self.assertTrue(str(e).startswith("tokens_file: "), str(e))

    def test_tokensFileBad(self):
        e = self.assertRaises(
            ConfigError, self.make, auth_strategy="tokens", tokens_file=self.mktemp()
        )
        self.assertTrue(str(e).startswith("tokens_file: "), str(e))

    def test_adminRole(self):
        self.policy = Policy.fromText(json.dumps({"context_is_admin": "!"}))
        keystone = self.make(auth_strategy="keystone", admin_role="boss")
        self.assertTrue(keystone.authenticate(confirmed(X_Roles="boss")).is_admin)
        self.assertFalse(keystone.authenticate(confirmed(X_Roles="admin")).is_admin)

    def test_adminRoleDefault(self):
        self.policy = Policy.fromText(json.dumps({"context_is_admin": "!"}))
        keystone = self.make(auth_strategy="keystone")
        self.assertTrue(keystone.authenticate(confirmed(X_Roles="admin")).is_admin)

    def test_adminRoleEmptyDisables(self):
        self.policy = Policy.fromText(json.dumps({"context_is_admin": "!"}))
        keystone = self.make(auth_strategy="keystone", admin_role="")
        self.assertFalse(keystone.authenticate(confirmed(X_Roles="admin")).is_admin)

    def test_readOnlyRole(self):
        keystone = self.make(auth_strategy="keystone", read_only_role="Viewer")
        self.assertTrue(keystone.authenticate(confirmed(X_Roles="viewer")).read_only)

    def test_badRoleNames(self):
        e = self.assertRaises(ConfigError, self.make, admin_role="a,b")
        self.assertTrue(str(e).startswith("admin_role: "), str(e))
        e = self.assertRaises(ConfigError, self.make, read_only_role="a,b")
        self.assertTrue(str(e).startswith("read_only_role: "), str(e))
        e = self.assertRaises(ConfigError, self.make, read_only_role="Admin")
        self.assertTrue(str(e).startswith("read_only_role: "), str(e))


class UnauthorizedTests(TestCase):
    def test_isA401(self):
        e = Unauthorized("Missing X-Auth-Token")
        self.assertIsInstance(e, errors.APIError)
        self.assertEqual(e.code, 401)
        self.assertEqual(e.message, "Missing X-Auth-Token")
