"""
The database drivers' own limits.
"""

from twisted.trial.unittest import SynchronousTestCase

from glancetx.registry.timeouts import (CONNECT_SECONDS, IDLE_IN_TRANSACTION_SECONDS,
                                        LOCK_SECONDS, MYSQL_IO_SECONDS, WORK_SECONDS,
                                        connectArgs)

MY = "mysql+pymysql://root@127.0.0.1:3306/glance"


class ConnectArgsTests(SynchronousTestCase):
    def test_postgresql(self):
        self.assertEqual(connectArgs("postgresql://u@h/glance"),
                         {"connect_timeout": CONNECT_SECONDS})

    def test_mysqlReadsOutlastTheRegistrysDeadline(self):
        self.assertEqual(connectArgs(MY), {
            "connect_timeout": CONNECT_SECONDS, "read_timeout": MYSQL_IO_SECONDS,
            "write_timeout": MYSQL_IO_SECONDS,
            "init_command": "SET SESSION innodb_lock_wait_timeout = %d" % (LOCK_SECONDS,)})

    def test_lockWaitsEndBeforeTheRegistrysDeadline(self):
        self.assertLess(LOCK_SECONDS, WORK_SECONDS)

    def test_onlyAFrozenTransactionIsEnded(self):
        """
        A session idle in a transaction is ended only well after any work
        the registry still waits for would have had its answer.
        """
        self.assertGreaterEqual(IDLE_IN_TRANSACTION_SECONDS, 2 * WORK_SECONDS)

    def test_migrationsWaitForLocks(self):
        """
        A migration waits for the locks it needs as long as it takes.
        """
        self.assertNotIn("init_command", connectArgs(MY, longStatements=True))

    def test_mysqlQuickLook(self):
        """
        The start-up's look at the revision gives up on a silent server as
        soon as a connect would: PyMySQL reads the server's greeting under
        its read limit, so the start waited a minute.
        """
        self.assertEqual(connectArgs(MY, quick=True)["read_timeout"], CONNECT_SECONDS)

    def test_migrationReadsHaveNoLimit(self):
        self.assertEqual(connectArgs(MY, longStatements=True),
                         {"connect_timeout": CONNECT_SECONDS})

    def test_theURLWins(self):
        self.assertEqual(connectArgs("postgresql://u@h/glance?connect_timeout=3"), {})
        self.assertNotIn("read_timeout", connectArgs(MY + "?read_timeout=5"))

    def test_sqlite(self):
        self.assertEqual(connectArgs("sqlite:///x.sqlite"), {})
