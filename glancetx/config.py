"""
Configuration: twistd command-line options plus a Glance-style INI file,
checked once at start-up into one immutable L{Config}.

Option names are Glance's.  An unknown option or a bad value stops the start
with a one-line L{ConfigError} naming the option, since a typo silently
ignored is how an operator ends up with images in the wrong place.
"""

import configparser
import os
from typing import Any, Callable, Dict, FrozenSet, Mapping, Tuple

import attr
from twisted.python import usage

from glancetx.errors import ConfigError

DEFAULT_PORT = "tcp:9292:interface=127.0.0.1"

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2",
                "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker")


def parseFlag(name: str, value: str) -> bool:
    """
    An INI true or false, as oslo.config spells them.
    """
    v = value.strip().lower()
    if v in ("true", "yes", "on", "1"):
        return True
    if v in ("false", "no", "off", "0"):
        return False
    raise ConfigError("%s: expected true or false, got %r" % (name, value))


def _int(minimum: int = 0, maximum: int = 2 ** 63 - 1) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        try:
            n = int(value.strip())
        except ValueError:
            raise ConfigError("%s: expected an integer, got %r" % (name, value))
        if not minimum <= n <= maximum:
            raise ConfigError("%s: must be between %d and %d" % (name, minimum, maximum))
        return n
    return parse


def _list(name: str, value: str) -> Tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise ConfigError("%s: must not be empty" % (name,))
    return items


def _str(name: str, value: str) -> str:
    return value.strip()


def _databaseURL(name: str, value: str) -> str:
    """
    A database URL the registry can use.  Its own parse error repeats the
    URL, password and all, so it is not passed on.
    """
    from sqlalchemy.engine.url import make_url
    from sqlalchemy.exc import ArgumentError

    v = value.strip()
    if not v:
        raise ConfigError("%s: must not be empty" % (name,))
    try:
        url = make_url(v)
    except (ArgumentError, ValueError):
        raise ConfigError("%s: not a database URL (dialect+driver://user:password@host/name)"
                          % (name,))
    backend = url.get_backend_name()
    if backend not in ("sqlite", "postgresql", "mysql"):
        raise ConfigError("%s: unknown database type %r; use sqlite, postgresql or"
                          " mysql+pymysql" % (name, backend))
    if backend == "mysql" and url.get_driver_name() != "pymysql":
        raise ConfigError("%s: MySQL is reached through PyMySQL: mysql+pymysql://..." % (name,))
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise ConfigError("%s: an in-memory SQLite database is not shared between"
                          " connections; give a file (sqlite:////path/glance.sqlite)" % (name,))
    return v


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, value: str) -> str:
        v = value.strip()
        if v not in choices:
            raise ConfigError("%s: must be one of %s, got %r" % (name, ", ".join(choices), value))
        return v
    return parse


#: Options this module checks itself: name → (parser, default).
_CORE: Dict[str, Tuple[Callable[[str, str], Any], Any]] = {
    "default_store": (_choice("file", "s3", "swift"), "file"),
    "stores": (_list, ("file", "http")),
    "filesystem_store_datadir": (_str, None),
    "filesystem_store_direct_io": (parseFlag, True),
    "filesystem_store_warm_cache": (parseFlag, False),
    "filesystem_store_early_flush": (parseFlag, True),
    "sql_connection": (_databaseURL, None),
    "image_size_cap": (_int(1), 1099511627776),
    "api_limit_max": (_int(1), 1000),
    "limit_param_default": (_int(1), 25),
    "image_member_quota": (_int(-1), 128),
    "image_property_quota": (_int(-1), 128),
    "disk_formats": (_list, DISK_FORMATS),
    "container_formats": (_list, CONTAINER_FORMATS),
    "disk_threads": (_int(1, 64), 8),
    "delayed_delete": (parseFlag, False),
    "scrub_time": (_int(0), 43200),
    "wakeup_time": (_int(1), 300),
    "upload_lease_seconds": (_int(3), 300),
    "access_log": (_str, ""),
    "client_socket_timeout": (_int(0), 900),
}

#: Options other modules check (stores, auth, policy): known names, whose
#: values are handed on as raw strings.
_PASSED_ON: FrozenSet[str] = frozenset("""
    auth_strategy tokens_file admin_role read_only_role policy_file
    property_protection_file property_protection_rule_format
    copy_from_allowed_networks
    s3_store_host s3_store_access_key s3_store_secret_key s3_store_bucket
    s3_store_create_bucket_on_put s3_store_bucket_url_format
    s3_store_large_object_size s3_store_large_object_chunk_size s3_store_region
    s3_store_region_name
    s3_store_max_parts_in_flight s3_store_request_timeout
    swift_store_auth_address swift_store_user swift_store_key
    swift_store_auth_version swift_store_container
    swift_store_create_container_on_put swift_store_large_object_size
    swift_store_large_object_chunk_size swift_store_project_name
    swift_store_project_domain_name swift_store_user_domain_name
    swift_store_region swift_store_endpoint swift_store_endpoint_type swift_store_service_type
    swift_store_auth_insecure swift_store_request_timeout
    notification_driver notification_transport_url notification_topics
    transport_url control_exchange amqp_durable_queues
    rabbit_ssl rabbit_ssl_ca_file rabbit_ssl_cert_file rabbit_ssl_key_file
""".split())

#: Sections of oslo.messaging's options, and the names their options take
#: here.  [oslo_messaging_notifications] is read whole, so a typo in it
#: stops the start; of [oslo_messaging_rabbit]'s many tuning options only
#: these are read: what is declared on the broker, and TLS.
_SECTIONS: Dict[str, Dict[str, str]] = {
    "oslo_messaging_notifications": {"driver": "notification_driver",
                                     "transport_url": "notification_transport_url",
                                     "topics": "notification_topics"},
    # Glance's own name for it since Kilo; [DEFAULT] sql_connection is the
    # older one.  The pool's tuning options there are not read.
    "database": {"connection": "sql_connection"},
    "oslo_messaging_rabbit": {"amqp_durable_queues": "amqp_durable_queues",
                              "ssl": "rabbit_ssl", "ssl_ca_file": "rabbit_ssl_ca_file",
                              "ssl_cert_file": "rabbit_ssl_cert_file",
                              "ssl_key_file": "rabbit_ssl_key_file"},
}
_STRICT_SECTIONS = ("oslo_messaging_notifications",)


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Config:
    port: str = DEFAULT_PORT
    data_dir: str = "glance-data"
    default_store: str = "file"
    stores: Tuple[str, ...] = ("file", "http")
    filesystem_store_datadir: str = ""
    #: Write image files around the page cache (O_DIRECT) where possible.
    filesystem_store_direct_io: bool = True
    #: Read each image written around the cache into it after its upload.
    filesystem_store_warm_cache: bool = False
    #: Flush such files as they are written, whenever the writer is idle.
    filesystem_store_early_flush: bool = True
    sql_connection: str = ""
    image_size_cap: int = 1099511627776
    api_limit_max: int = 1000
    limit_param_default: int = 25
    image_member_quota: int = 128
    image_property_quota: int = 128
    disk_formats: Tuple[str, ...] = DISK_FORMATS
    container_formats: Tuple[str, ...] = CONTAINER_FORMATS
    disk_threads: int = 8
    delayed_delete: bool = False
    scrub_time: int = 43200
    wakeup_time: int = 300
    #: How long an upload's image stays C{saving} after its process dies.
    upload_lease_seconds: int = 300
    #: A file for the access log; empty for the twistd log.
    access_log: str = ""
    #: Seconds a client may read nothing of an answer before its
    #: connection is closed (Glance's option; 0: never).
    client_socket_timeout: int = 900
    #: Every option from the file, as raw strings, for the modules that
    #: check their own (stores, auth, policy).
    raw: Mapping[str, str] = attr.ib(factory=dict)


def readINI(path: str) -> Dict[str, str]:
    """
    The options in C{[DEFAULT]} and C{[glance_store]} of an INI file,
    C{[database]}'s connection, and the notification options of
    oslo.messaging's sections (L{_SECTIONS}).
    Other sections (Glance's paste and keystone sections) are ignored.
    """
    parser = configparser.ConfigParser(interpolation=None)
    try:
        # utf-8-sig: a file an editor saved with a byte-order mark.
        with open(path, encoding="utf-8-sig") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError("--config: cannot read %s: %s" % (path, e.strerror))
    except UnicodeDecodeError:
        raise ConfigError("--config: %s is not UTF-8 text" % (path,))
    except configparser.Error as e:
        raise ConfigError("--config: %s is not a valid INI file: %s"
                          % (path, str(e).splitlines()[0]))
    options = dict(parser.defaults())
    defaults = dict(options)
    if parser.has_section("glance_store"):
        for key in parser.options("glance_store"):
            options[key] = parser.get("glance_store", key)
    for section, names in _SECTIONS.items():
        if not parser.has_section(section):
            continue
        for key in parser.options(section):
            value = parser.get(section, key)
            if defaults.get(key) == value:
                continue  # [DEFAULT]'s, which every section shows
            if key in names:
                if names[key] == "sql_connection" and not value.strip():
                    # It would win over [DEFAULT]'s, and be blamed on it.
                    raise ConfigError("[%s] %s: must not be empty" % (section, key))
                options[names[key]] = value
            elif section in _STRICT_SECTIONS:
                raise ConfigError("[%s] %s: unknown option" % (section, key))
    return options


def build(port: str, dataDir: str, options: Mapping[str, str]) -> Config:
    """
    Check every option and make the L{Config}.
    """
    values: Dict[str, Any] = {}
    for name, raw in options.items():
        if name in _CORE:
            parse, _ = _CORE[name]
            values[name] = parse(name, raw)
        elif name not in _PASSED_ON:
            raise ConfigError("%s: unknown option" % (name,))
    dataDir = os.path.abspath(dataDir)
    if os.path.exists(dataDir) and not os.path.isdir(dataDir):
        raise ConfigError("--data-dir: %s is not a directory" % (dataDir,))
    if values.get("filesystem_store_datadir") == "":
        # Not the default: the store would write into whatever directory
        # the server was started in.
        raise ConfigError("filesystem_store_datadir: must not be empty")
    values.setdefault("filesystem_store_datadir", os.path.join(dataDir, "images"))
    values.setdefault("sql_connection",
                      "sqlite:///" + os.path.join(dataDir, "glance.sqlite"))
    if values.get("access_log"):
        values["access_log"] = os.path.join(dataDir, values["access_log"])
        parent = os.path.dirname(values["access_log"])
        if parent != dataDir and not os.path.isdir(parent):
            raise ConfigError("access_log: no directory %s" % (parent,))
    stores = set(values.get("stores", _CORE["stores"][1]))
    default = values.get("default_store", "file")
    stores.add(default)
    stores.add("file")
    unknown = stores - {"file", "http", "s3", "swift"}
    if unknown:
        raise ConfigError("stores: unknown store %s" % (", ".join(sorted(unknown)),))
    values["stores"] = tuple(sorted(stores))
    for name in ("disk_formats", "container_formats"):
        if name in values:
            known = DISK_FORMATS if name == "disk_formats" else CONTAINER_FORMATS
            bad = [v for v in values[name] if v not in known]
            if bad:
                raise ConfigError("%s: unknown format %s" % (name, ", ".join(bad)))
    if values.get("limit_param_default", 25) > values.get("api_limit_max", 1000):
        raise ConfigError("limit_param_default: must not exceed api_limit_max")
    return Config(port=port, data_dir=dataDir, raw=dict(options), **values)


class Options(usage.Options):
    """
    C{twistd glance} command-line options.
    """

    optParameters = [
        ["port", "p", DEFAULT_PORT, "Endpoint to listen on (a Twisted endpoint string)."],
        ["data-dir", "d", "glance-data",
         "Directory for the SQLite registry and the filesystem store."],
        ["config", "c", None, "Glance-style INI file ([DEFAULT] and [glance_store])."],
    ]

    #: A bad configuration, reported by makeService as one line (a
    #: UsageError here would make twistd print its whole usage text first).
    configError = None

    def postOptions(self) -> None:
        try:
            options = readINI(self["config"]) if self["config"] else {}
            self.config = build(self["port"], self["data-dir"], options)
        except ConfigError as e:
            self.configError = e
