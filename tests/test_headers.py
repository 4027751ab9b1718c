import datetime

from twisted.trial.unittest import TestCase

from glancetx import errors
from glancetx.web import headers as h
from tests.test_streaming import record


def raw(**kw):
    return [(k.replace("_", "-").encode() if not k.startswith("x") else k.encode(), [v.encode()])
            for k, v in kw.items()]


def hdrs(pairs):
    return [(k.encode(), [v.encode()]) for k, v in pairs]


class ChangesFromHeadersTests(TestCase):
    def test_fieldsAndProperties(self):
        c = h.changesFromHeaders(hdrs([
            ("X-Image-Meta-Name", "My Image"), ("x-image-meta-disk-format", "raw"),
            ("x-image-meta-is_public", "TRUE"), ("x-image-meta-min-ram", "512"),
            ("x-image-meta-size", "10"), ("X-Image-Meta-Property-OS_Distro", "Debian"),
            ("x-image-meta-store", "s3"), ("x-glance-api-copy-from", "http://h/x"),
            ("x-image-meta-location", "swift://a/b"), ("x-glance-registry-purge-props", "false"),
            ("Content-Type", "application/octet-stream")]))
        self.assertEqual(dict(c.fields), {"name": "My Image", "disk_format": "raw",
                                          "is_public": True, "min_ram": 512, "size": 10})
        self.assertEqual(dict(c.properties), {"os_distro": "Debian"})
        self.assertEqual((c.store, c.copy_from, c.location, c.purge_properties),
                         ("s3", "http://h/x", "swift://a/b", False))

    def test_sourceSchemesInAnyCase(self):
        """
        A URL's scheme is read in any case (RFC 3986), and kept in lower
        case, so an image registered at HTTP://... is served by the http
        store like any other.  The rest of the URL is kept as given.
        """
        c = h.changesFromHeaders(hdrs([("x-image-meta-location", "HTTPS://Host/A%41")]))
        self.assertEqual(c.location, "https://Host/A%41")
        c = h.changesFromHeaders(hdrs([("x-glance-api-copy-from", "Http://H/x")]))
        self.assertEqual(c.copy_from, "http://H/x")
        c = h.changesFromHeaders(hdrs([("x-image-meta-copy_from", "SWIFT+HTTP://u:K@h/a/c/o")]))
        self.assertEqual(c.copy_from, "swift+http://u:K@h/a/c/o")
        c = h.changesFromHeaders(hdrs([("x-image-meta-location", "no-scheme/X")]))
        self.assertEqual(c.location, "no-scheme/X")

    def test_ipv6BracketsAsGlanceclientSendsThem(self):
        """
        python-glanceclient percent-encodes a location's brackets
        (C{http://%5B::1%5D:8080/x}), which no host name holds: they are
        put back, so C{--copy-from http://[::1]:8080/x} works, and the
        user's own encodings come back as typed.
        """
        for given, kept in [("http://%5B::1%5D:8080/img%255B1%255D",
                             "http://[::1]:8080/img%5B1%5D"),
                            ("http://u:p@%5b2001:db8::1%5d/x", "http://u:p@[2001:db8::1]/x"),
                            ("HTTP://%5B::1%5D", "http://[::1]"),
                            ("http://h%5B/x", "http://h%5B/x")]:
            c = h.changesFromHeaders(hdrs([("x-glance-api-copy-from", given)]))
            self.assertEqual(c.copy_from, kept)
            c = h.changesFromHeaders(hdrs([("x-image-meta-location", given)]))
            self.assertEqual(c.location, kept)

    def test_credentialsAsGlanceclientSendsThem(self):
        """
        python-glanceclient percent-encodes a location's C{@} (and every
        C{%} in it): an authority with C{%40} and no C{@} is undone once,
        whole, so C{--location s3://AK:SK@host/b/o} names the store it
        names (it was refused as not naming the configured store).  The
        user's own encodings come back as they typed them.
        """
        for given, kept in [
                ("s3://AK:SK%40127.0.0.1:9000/glance/o", "s3://AK:SK@127.0.0.1:9000/glance/o"),
                ("s3://AK:pa%2540ss%40h/b/o%2520x", "s3://AK:pa%40ss@h/b/o%20x"),
                ("swift+http://test%253Atester:testing%40127.0.0.1:8080/auth/v1.0/c/o",
                 "swift+http://test%3Atester:testing@127.0.0.1:8080/auth/v1.0/c/o"),
                ("http://u:p%40%5B::1%5D:8080/x", "http://u:p@[::1]:8080/x"),
                ("s3%2Bhttp://AK:SK%40h:9000/b/o", "s3+http://AK:SK@h:9000/b/o"),
                ("SWIFT%2bHTTPS://u:k%40h/v1/c/o", "swift+https://u:k@h/v1/c/o"),
                # A real "@": kept as given.
                ("s3://AK:p%40ss@h/b/o", "s3://AK:p%40ss@h/b/o")]:
            c = h.changesFromHeaders(hdrs([("x-image-meta-location", given)]))
            self.assertEqual(c.location, kept)
            c = h.changesFromHeaders(hdrs([("x-glance-api-copy-from", given)]))
            self.assertEqual(c.copy_from, kept)

    def test_propertyKeysAsGlanceReadThem(self):
        """
        A property key is lower-cased and its hyphens become underscores, as
        Glance read them, so the header that carries it back
        (x-image-meta-property-os_distro) names the same key.
        """
        c = h.changesFromHeaders(hdrs([("X-Image-Meta-Property-Os-Distro", "debian"),
                                       ("x-image-meta-property-hw_disk-bus", "scsi")]))
        self.assertEqual(dict(c.properties), {"os_distro": "debian", "hw_disk_bus": "scsi"})

    def test_unknownField(self):
        self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                          hdrs([("x-image-meta-colour", "red")]))

    def test_badValues(self):
        for name, value in [("x-image-meta-size", "-1"), ("x-image-meta-size", "1e3"),
                            ("x-image-meta-size", "1_0"), ("x-image-meta-min_ram", "\u0661"),
                            ("x-image-meta-min_disk", " "),
                            ("x-image-meta-protected", "yes please"),
                            ("x-image-meta-min_disk", "lots")]:
            self.assertRaises(errors.BadRequest, h.changesFromHeaders, hdrs([(name, value)]))
        self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                          [(b"x-image-meta-name", [b"\xff\xfe"])])

    def test_integersOfAnyLength(self):
        """
        However many digits: int() refuses a string of more than 4,300 with
        a ValueError, which was a 500.  Leading zeros are no value.
        """
        huge = "9" * 5000
        for name in ("x-image-meta-size", "x-image-meta-min_disk", "x-image-meta-min_ram",
                     "x-image-meta-virtual_size"):
            e = self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                                  hdrs([(name, huge)]))
            self.assertIn("too large", e.message)
            e = self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                                  hdrs([(name, "-" + huge)]))
            self.assertIn("must not be negative", e.message)
        c = h.changesFromHeaders(hdrs([("x-image-meta-size", "0" * 5000 + "42")]))
        self.assertEqual(c.fields["size"], 42)

    def test_otherHeadersNotRead(self):
        """
        Headers that are not Glance's are not read, so bytes that are not
        UTF-8 in them refuse nothing.
        """
        c = h.changesFromHeaders([(b"User-Agent", [b"caf\xe9"]),
                                  (b"X-Forwarded-For", [b"\xe9"]),
                                  (b"x-image-meta-name", [b"n"])])
        self.assertEqual(dict(c.fields), {"name": "n"})

    def test_controlCharactersRefused(self):
        for value in (b"a\x01b", b"a\x7fb", b"a\x1bb"):
            self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                              [(b"x-image-meta-name", [value])])
            self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                              [(b"x-image-meta-property-p", [value])])
        c = h.changesFromHeaders([(b"x-image-meta-name", [b"a\tb \xc3\xa9"])])
        self.assertEqual(c.fields["name"], "a\tb \u00e9")

    def test_onlySpacesAndTabsTrimmed(self):
        """
        A value loses the spaces and tabs around it (HTTP's whitespace),
        and no other character: Unicode's spaces and line separators at
        its ends were dropped without a word.
        """
        for text in ("x\u00a0", "\u3000\u540d", "\u2003em\u2003", "\u2028", "\u0085a"):
            c = h.changesFromHeaders([(b"x-image-meta-name", [text.encode("utf-8")]),
                                      (b"x-image-meta-property-p", [text.encode("utf-8")])])
            self.assertEqual((c.fields["name"], c.properties["p"]), (text, text))
        c = h.changesFromHeaders([(b"x-image-meta-name", [b" \t a b\t "])])
        self.assertEqual(c.fields["name"], "a b")

    def test_repeatedHeaders(self):
        """
        A field given twice with different values is refused, not decided
        by whichever came last; the same value twice is that value.
        """
        for name in (b"x-image-meta-size", b"x-image-meta-name",
                     b"x-image-meta-property-a", b"x-glance-api-copy-from"):
            self.assertRaises(errors.BadRequest, h.changesFromHeaders, [(name, [b"1", b"2"])])
        c = h.changesFromHeaders([(b"x-image-meta-size", [b"7", b"7"])])
        self.assertEqual(dict(c.fields), {"size": 7})

    def test_noneBooleanIsUnset(self):
        c = h.changesFromHeaders(hdrs([("x-image-meta-is_public", "None")]))
        self.assertNotIn("is_public", c.fields)

    def test_timestampsIgnored(self):
        c = h.changesFromHeaders(hdrs([("x-image-meta-created_at", "2020-01-01")]))
        self.assertEqual(dict(c.fields), {})


class RenderTests(TestCase):
    def test_headersRoundTrip(self):
        image = record(size=3, checksum="a" * 32, properties={"k": "v"})
        out = h.imageHeaders(image)
        self.assertEqual(out[b"x-image-meta-size"], b"3")
        self.assertEqual(out[b"x-image-meta-is_public"], b"False")
        self.assertEqual(out[b"x-image-meta-property-k"], b"v")
        self.assertEqual(out[b"x-image-meta-created_at"], b"2020-01-01T00:00:00.000000")
        self.assertNotIn(b"x-image-meta-deleted_at", out)
        self.assertNotIn(b"x-image-meta-location", out)
        back = h.changesFromHeaders([(k, [v]) for k, v in out.items()])
        self.assertEqual(back.fields["size"], 3)
        self.assertEqual(dict(back.properties), {"k": "v"})

    def test_propertyNamesThatAreNoHeaderName(self):
        """
        A property whose name cannot be a header name (a database Glance v2
        wrote allows any) is left out of the headers, and shown in the
        lists' JSON: Twisted refused the header, a 500 for every HEAD.
        """
        names = {"os distro": "a", "\u00fcn\u00ef": "b", "a:b": "c", "k": "v", "a.b-c_d": "e",
                 "": "f"}
        image = record(properties=names)
        shown = {k for k in h.imageHeaders(image) if k.startswith(b"x-image-meta-property-")}
        self.assertEqual(shown, {b"x-image-meta-property-k", b"x-image-meta-property-a.b-c_d"})
        self.assertEqual(h.imageDict(image)["properties"], names)

    def test_jsonForms(self):
        image = record(size=3, properties={"k": "v"})
        d = h.imageDict(image)
        self.assertEqual(d["properties"], {"k": "v"})
        self.assertEqual(d["created_at"], "2020-01-01T00:00:00.000000")
        self.assertNotIn("location", d)
        self.assertEqual(set(h.briefDict(image)),
                         {"id", "name", "disk_format", "container_format", "checksum", "size"})


    def test_noSizeYetShowsAsZero(self):
        """
        An image with no bytes yet (queued, or killed before its size was
        known) shows size 0, as Glance's did: python-glanceclient's
        image-show --human-readable fails on a HEAD without the size.
        """
        image = record(status="queued", size=None)
        self.assertEqual(h.imageHeaders(image)[b"x-image-meta-size"], b"0")
        self.assertEqual(h.imageDict(image)["size"], 0)
        self.assertEqual(h.briefDict(image)["size"], 0)
        self.assertIsNone(h.imageDict(image)["virtual_size"])


class ListQueryTests(TestCase):
    def parse(self, admin=False, **args):
        return h.parseListQuery({k.encode(): [v.encode()] for k, v in args.items()},
                                25, 1000, admin)

    def test_defaultsAndCap(self):
        self.assertEqual(self.parse()["limit"], 25)
        self.assertEqual(self.parse(limit="5000")["limit"], 1000)
        self.assertEqual(self.parse(limit="9" * 5000)["limit"], 1000)
        self.assertEqual(self.parse(limit="0" * 5000 + "7")["limit"], 7)

    def test_propertyFiltersBounded(self):
        """
        At most 32 property filters: PostgreSQL took a second to plan 100
        and a minute and a half for 300, holding the database meanwhile.
        """
        most = {"property-p%d" % i: "v" for i in range(32)}
        self.assertEqual(len(self.parse(**most)["properties"]), 32)
        e = self.assertRaises(errors.BadRequest, self.parse, **dict(most, **{"property-x": "v"}))
        self.assertEqual(e.message, "A list may filter on at most 32 properties.")

    def test_integerFiltersOfAnyLength(self):
        for name in ("size_min", "size_max", "min_ram", "min_disk"):
            self.assertRaises(errors.BadRequest, self.parse, **{name: "9" * 5000})
        self.assertRaises(errors.BadRequest, self.parse, limit="-" + "9" * 5000)

    def test_filters(self):
        q = self.parse(**{"name": "x", "size_min": "3", "protected": "true",
                          "property-os": "linux", "changes-since": "2020-01-02T03:04:05Z"})
        self.assertEqual(q["filters"], {"name": "x", "size_min": 3, "protected": True})
        self.assertEqual(q["properties"], {"os": "linux"})
        self.assertEqual(q["changes_since"], datetime.datetime(2020, 1, 2, 3, 4, 5))

    def test_timezoneNormalised(self):
        q = self.parse(**{"changes-since": "2020-01-02T05:04:05 02:00"})
        self.assertEqual(q["changes_since"], datetime.datetime(2020, 1, 2, 3, 4, 5))

    def test_isPublicOnlyForAdmins(self):
        self.assertNotIn("restrict_to_visible", self.parse(is_public="none"))
        self.assertEqual(self.parse(admin=True, is_public="none")["restrict_to_visible"], False)
        q = self.parse(admin=True, is_public="false")
        self.assertEqual((q["restrict_to_visible"], q["is_public"]), (False, False))
        self.assertEqual(self.parse(admin=True)["restrict_to_visible"], True)

    def test_bad(self):
        for args in [{"limit": "x"}, {"limit": "-2"}, {"sort_key": "location"},
                     {"sort_dir": "sideways"}, {"min_ram": "many"},
                     {"changes-since": "tuesday"}, {"protected": "2"},
                     {"limit": "1_0"}, {"size_min": "1_000"},
                     {"min_ram": "\u0661\u0661"}, {"limit": "\uff15"}]:
            self.assertRaises(errors.BadRequest, self.parse, **args)

    def test_propertyFilterKeysAsStored(self):
        """
        Property keys are stored lower-cased with underscores for hyphens,
        so a filter's key is read the same way, or it could match nothing.
        """
        q = self.parse(**{"property-OS-Distro": "Debian"})
        self.assertEqual(q["properties"], {"os_distro": "Debian"})


    def test_propertyNamesAreUTF8(self):
        q = h.parseListQuery({"property-\u00e9t\u00e9".encode("utf-8"): [b"oui"]}, 25, 1000, False)
        self.assertEqual(q["properties"], {"\u00e9t\u00e9": "oui"})

    def test_textTheDatabaseCannotHold(self):
        """
        Every text parameter, property names included, is refused with a
        message naming it when it is not UTF-8 or holds a NUL character.
        """
        for raw, message in [({b"name": [b"a\0b"]}, "Query parameter name must not contain NUL"),
                             ({b"status": [b"\xff"]}, "Query parameter status is not valid UTF-8"),
                             ({b"property-a": [b"\0"]},
                              "Query parameter property-a must not contain NUL"),
                             ({b"property-\0": [b"a"]}, "must not contain NUL"),
                             ({b"property-\xff": [b"a"]}, "is not valid UTF-8")]:
            e = self.assertRaises(errors.BadRequest, h.parseListQuery, raw, 25, 1000, False)
            self.assertIn(message, e.message)

    def test_headerWithNUL(self):
        e = self.assertRaises(errors.BadRequest, h.changesFromHeaders,
                              [(b"x-image-meta-property-a", [b"x\0"])])
        self.assertIn("Header x-image-meta-property-a must not contain NUL", e.message)


class ImageDictTimeFieldsTests(TestCase):
    def test_onlyTimeFieldsAreDatetimes(self):
        """
        imageDict renders only _TIME_FIELDS: every datetime field of a
        record must be one of them.
        """
        import attr

        from glancetx.registry.registry import ImageRecord
        hints = {a.name: a.type for a in attr.fields(ImageRecord)}
        datetimes = sorted(n for n in h.IMAGE_FIELDS if "datetime" in str(hints[n]))
        self.assertEqual(datetimes, sorted(h._TIME_FIELDS))
