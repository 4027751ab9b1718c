import os

from twisted.python import usage
from twisted.trial.unittest import TestCase

from glancetx import config
from glancetx.errors import ConfigError


class ConfigTests(TestCase):
    def ini(self, text):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_defaults(self):
        c = config.build(config.DEFAULT_PORT, "data", {})
        self.assertEqual(c.port, "tcp:9292:interface=127.0.0.1")
        self.assertEqual(c.default_store, "file")
        self.assertEqual(c.sql_connection,
                         "sqlite:///" + os.path.join(os.path.abspath("data"), "glance.sqlite"))
        self.assertEqual(c.filesystem_store_datadir, os.path.join(os.path.abspath("data"), "images"))
        self.assertEqual((c.api_limit_max, c.limit_param_default), (1000, 25))
        self.assertEqual((c.image_member_quota, c.image_property_quota), (128, 128))
        self.assertTrue(c.filesystem_store_direct_io)
        self.assertEqual(c.upload_lease_seconds, 300)
        self.assertEqual(config.build("tcp:1", "d", {"upload_lease_seconds": "3"})
                         .upload_lease_seconds, 3)

    def test_directIOReachesTheStore(self):
        from twisted.internet.testing import MemoryReactor
        from glancetx.service import makeStores
        for value, expected in (("false", False), ("true", True)):
            c = config.build("tcp:1", self.mktemp(), {"filesystem_store_direct_io": value,
                                                     "stores": "file"})
            self.assertIs(makeStores(c, MemoryReactor(), None)["file"].directIO, expected)

    def test_earlyFlushReachesTheStore(self):
        from twisted.internet.testing import MemoryReactor
        from glancetx.service import makeStores
        for options, expected in (({}, True), ({"filesystem_store_early_flush": "false"}, False)):
            c = config.build("tcp:1", self.mktemp(), dict(options, stores="file"))
            self.assertIs(makeStores(c, MemoryReactor(), None)["file"].earlyFlush, expected)

    def test_warmCacheReachesTheStore(self):
        """
        The store warms new images when told to, and never when it writes
        through the cache anyway.
        """
        from twisted.internet.testing import MemoryReactor
        from glancetx.budget import SharedBudget
        from glancetx.service import makeStores
        on = {"filesystem_store_warm_cache": "true"}
        for options, warms in (({}, False), (on, True),
                               (dict(on, filesystem_store_direct_io="false"), False)):
            c = config.build("tcp:1", self.mktemp(), dict(options, stores="file"))
            reactor = MemoryReactor()
            store = makeStores(c, reactor, None)["file"]
            self.assertIs(store.warmer is not None, warms, options)
            stops = [f for f, _, _ in reactor.triggers.get("before", {}).get("shutdown", [])]
            self.assertEqual(stops, [store.warmer.stop] if warms else [], options)
        # It waits while any upload holds a share of the upload budget.
        budget = SharedBudget()
        store = makeStores(config.build("tcp:1", self.mktemp(), dict(on, stores="file")),
                           MemoryReactor(), None, budget)["file"]
        self.assertTrue(store.warmer._idle())
        share = budget.join()
        self.assertFalse(store.warmer._idle())
        share.leave()
        self.assertTrue(store.warmer._idle())

    def test_iniSections(self):
        path = self.ini("[DEFAULT]\nimage_size_cap = 100\napi_limit_max = 50\n"
                        "[glance_store]\nfilesystem_store_datadir = /srv/images\n"
                        "[keystone_authtoken]\nwhatever = 1\n")
        c = config.build("tcp:1", "d", config.readINI(path))
        self.assertEqual(c.image_size_cap, 100)
        self.assertEqual(c.api_limit_max, 50)
        self.assertEqual(c.filesystem_store_datadir, "/srv/images")

    def test_databaseSection(self):
        """
        Glance's C{[database] connection} names the database (it was
        ignored, and the server ran on its own SQLite file without a word);
        it wins over the older C{[DEFAULT] sql_connection}.
        """
        path = self.ini("[DEFAULT]\nsql_connection = sqlite:////tmp/old.sqlite\n"
                        "[database]\nconnection = postgresql://g@db/glance\n"
                        "max_pool_size = 10\n")
        c = config.build("tcp:1", "d", config.readINI(path))
        self.assertEqual(c.sql_connection, "postgresql://g@db/glance")

    def test_emptyDatabaseSection(self):
        """
        An empty C{[database] connection} is named as such (it won over
        C{sql_connection}, and the error blamed that).
        """
        path = self.ini("[DEFAULT]\nsql_connection = sqlite:////tmp/x.sqlite\n"
                        "[database]\nconnection =\n")
        e = self.assertRaises(ConfigError, config.readINI, path)
        self.assertEqual(str(e), "[database] connection: must not be empty")

    def test_dataDirNotADirectory(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w"):
            pass
        e = self.assertRaises(ConfigError, config.build, "tcp:1", path, {})
        self.assertEqual(str(e), "--data-dir: %s is not a directory" % (path,))

    def test_badDatabaseURL(self):
        """
        A database URL that cannot be used is one line that names the
        option, and never repeats the URL: SQLAlchemy's own parse error
        did, password and all.
        """
        for value, why in [("postgresql:/postgres:SEKRIT@127.0.0.1/x", "not a database URL"),
                           ("", "must not be empty"),
                           ("foo://u:SEKRIT@h/db", "unknown database type 'foo'"),
                           ("mysql://root:SEKRIT@127.0.0.1/glance", "PyMySQL"),
                           ("sqlite://", "in-memory"), ("sqlite:///:memory:", "in-memory")]:
            e = self.assertRaises(ConfigError, config.build, "tcp:1", "d",
                                  {"sql_connection": value})
            self.assertTrue(str(e).startswith("sql_connection: "), str(e))
            self.assertIn(why, str(e))
            self.assertNotIn("SEKRIT", str(e))
        for good in ("postgresql://g@127.0.0.1/glance", "postgresql+psycopg2://g@h/glance",
                     "mysql+pymysql://root@127.0.0.1/glance", "sqlite:////tmp/g.sqlite"):
            self.assertEqual(config.build("tcp:1", "d", {"sql_connection": good}).sql_connection,
                             good)

    def test_configNotText(self):
        """
        A config file that is not UTF-8 text is one line (it was a
        traceback); one saved with a byte-order mark is read.
        """
        path = self.mktemp()
        with open(path, "wb") as f:
            f.write(b"\x00\xff\xfe")
        e = self.assertRaises(ConfigError, config.readINI, path)
        self.assertEqual(str(e), "--config: %s is not UTF-8 text" % (path,))
        with open(path, "wb") as f:
            f.write(b"\xef\xbb\xbf[DEFAULT]\nimage_size_cap = 7\n")
        self.assertEqual(config.readINI(path)["image_size_cap"], "7")

    def test_accessLog(self):
        self.assertEqual(config.build("tcp:1", "d", {}).access_log, "")
        c = config.build("tcp:1", "d", {"access_log": "access.log"})
        self.assertEqual(c.access_log, os.path.join(os.path.abspath("d"), "access.log"))
        c = config.build("tcp:1", "d", {"access_log": "/tmp/glance-access.log"})
        self.assertEqual(c.access_log, "/tmp/glance-access.log")
        e = self.assertRaises(ConfigError, config.build, "tcp:1", "d",
                              {"access_log": "/nonexistent/dir/access.log"})
        self.assertTrue(str(e).startswith("access_log: no directory"), str(e))

    def test_unknownOption(self):
        e = self.assertRaises(ConfigError, config.build, "tcp:1", "d", {"imgae_size_cap": "1"})
        self.assertEqual(str(e), "imgae_size_cap: unknown option")

    def test_everyStoreOptionIsKnown(self):
        """
        Every option a store driver reads can be given: the Swift store
        read C{swift_store_endpoint}, but the start refused it as unknown.
        """
        import glob
        import re
        here = os.path.dirname(os.path.abspath(config.__file__))
        names = set()
        for path in glob.glob(os.path.join(here, "store", "*.py")):
            with open(path) as f:
                source = f.read()
            names.update(re.findall(r'_[A-Za-z]+\(conf, "([a-z0-9_]+)"', source))
            names.update(re.findall(r'conf\.get\("([a-z0-9_]+)"', source))
        self.assertIn("swift_store_endpoint", names)
        for name in sorted(names):
            try:
                config.build("tcp:1", "d", {name: "x"})
            except ConfigError as e:
                self.assertNotIn("unknown option", str(e))

    def test_badValues(self):
        for name, value in [("image_size_cap", "big"), ("image_size_cap", "0"),
                            ("default_store", "tape"), ("disk_formats", "raw,floppy"),
                            ("delayed_delete", "perhaps"), ("disk_formats", ""),
                            ("limit_param_default", "5000"), ("upload_lease_seconds", "2"),
                            # It wrote images into the start's working directory.
                            ("filesystem_store_datadir", " ")]:
            e = self.assertRaises(ConfigError, config.build, "tcp:1", "d", {name: value})
            self.assertTrue(str(e).startswith(name + ":"), str(e))
            self.assertNotIn("\n", str(e))

    def test_optionsKeepTheError(self):
        opts = config.Options()
        opts.parseOptions(["--config", self.ini("[DEFAULT]\nbogus = 1\n")])
        self.assertEqual(str(opts.configError), "bogus: unknown option")
        opts = config.Options()
        opts.parseOptions(["--config", "/nonexistent"])
        self.assertIn("--config", str(opts.configError))
        opts = config.Options()
        opts.parseOptions(["--config", self.ini("not an ini")])
        self.assertIn("not a valid INI", str(opts.configError))
        self.assertRaises(usage.UsageError, config.Options().parseOptions, ["--bogus"])
