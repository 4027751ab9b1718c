"""
Which ETags state an object's MD5.
"""

from twisted.trial.unittest import SynchronousTestCase

from glancetx.store.etags import plainMD5

MD5 = "9e107d9d372bb6826bd81d3542a419d6"


class PlainMD5Tests(SynchronousTestCase):
    def test_singleObject(self):
        self.assertEqual(plainMD5('"%s"' % (MD5,)), MD5)
        self.assertEqual(plainMD5(MD5), MD5)
        self.assertEqual(plainMD5(' "%s" ' % (MD5.upper(),)), MD5)

    def test_saysNothing(self):
        for etag in [None, "", '"%s-3"' % (MD5,), 'W/"%s"' % (MD5,), '"%s"' % (MD5[:-1],),
                     '"%sz"' % (MD5[:-1],), '"%s00"' % (MD5,)]:
            self.assertIsNone(plainMD5(etag), etag)
