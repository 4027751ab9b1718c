"""
Who may see and change which image, through the real server, in the
C{tokens} and C{keystone} auth modes: three tenants (alice, bob, carol), an
admin, and a read-only reader in alice's tenant.
"""

import json
import os
import time

from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.test_api import RAW, APITestsMixin


def async_test(f):
    def wrapper(self):
        return ensureDeferred(f(self))
    wrapper.__name__ = f.__name__
    return wrapper


PEOPLE = {
    # name: (user, tenant, roles)
    "admin": ("u-admin", "t-admin", "admin"),
    "alice": ("u-alice", "t-alice", "member"),
    "bob": ("u-bob", "t-bob", "member"),
    "carol": ("u-carol", "t-carol", "member"),
    "reader": ("u-reader", "t-alice", "member,reader"),
}


class TenancyMixin(APITestsMixin):
    """
    Every rule, in one auth mode; subclasses say how a person is named in
    a request.
    """

    timeout = 120
    extraOptions: dict = {}

    def who(self, name):
        raise NotImplementedError()

    async def start(self, **options):
        opts = dict(self.baseOptions(), read_only_role="reader")
        opts.update(options)
        return await self.server(**opts)

    async def as_(self, name, method, path, headers=None, data=None, expect=None):
        h = dict(self.who(name)) if name else {}
        h.update(headers or {})
        return await self.request(method, path, h, data, expect)

    async def image(self, name, data=b"bytes", headers=None, expect=201):
        h = {"x-image-meta-name": "%s-image" % (name,)}
        h.update(RAW)
        h.update(headers or {})
        resp, body = await self.as_(name, "POST", "/v1/images", h, data, expect)
        return json.loads(body)["image"] if expect == 201 else body

    async def ids(self, name, query=""):
        resp, body = await self.as_(name, "GET", "/v1/images/detail" + query, expect=200)
        return {i["id"] for i in json.loads(body)["images"]}

    # -- visibility -----------------------------------------------------------

    @async_test
    async def test_strangerSeesNothing(self):
        """
        The sweep: bob, on every endpoint, for alice's private image, gets
        404 (never 200 or 403) and never sees its id.
        """
        await self.start()
        img = await self.image("alice")
        iid = img["id"]
        base = "/v1/images/" + iid
        calls = [
            ("HEAD", base, None, None), ("GET", base, None, None),
            ("PUT", base, {"x-image-meta-name": "x"}, None),
            ("PUT", base, {"Content-Type": "application/octet-stream"}, b"data"),
            ("DELETE", base, None, None),
            ("GET", base + "/members", None, None),
            ("PUT", base + "/members", None, b'{"memberships": []}'),
            ("GET", base + "/members/t-bob", None, None),
            ("PUT", base + "/members/t-bob", None, None),
            ("DELETE", base + "/members/t-alice", None, None),
        ]
        for method, path, headers, data in calls:
            resp, body = await self.as_("bob", method, path, headers, data)
            self.assertEqual(resp.code, 404, (method, path, body))
            self.assertNotIn(iid.encode(), body)
        for path in ("/v1/images", "/v1/images/detail", "/v1/images/detail?is_public=none",
                     "/v1/images/detail?is_public=false", "/v1/shared-images/t-alice",
                     "/v1/shared-images/t-bob", "/v1/images/detail?name=alice-image"):
            resp, body = await self.as_("bob", "GET", path)
            self.assertEqual(resp.code, 200, path)
            self.assertNotIn(iid.encode(), body, path)
        resp, body = await self.as_("bob", "GET", "/v1/images?marker=" + iid)
        self.assertEqual(resp.code, 400)
        self.assertNotIn(iid.encode(), body)
        # Still alice's, untouched.
        resp, body = await self.as_("alice", "HEAD", base, expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-name"), "alice-image")

    @async_test
    async def test_ownerAndAdminSee(self):
        await self.start()
        img = await self.image("alice")
        await self.as_("alice", "GET", "/v1/images/" + img["id"], expect=200)
        await self.as_("reader", "GET", "/v1/images/" + img["id"], expect=200)
        await self.as_("admin", "GET", "/v1/images/" + img["id"], expect=200)
        self.assertIn(img["id"], await self.ids("alice"))
        self.assertNotIn(img["id"], await self.ids("carol"))

    @async_test
    async def test_adminListsLikeAUserByDefault(self):
        await self.start()
        private = await self.image("alice")
        public = await self.image("admin", headers={"x-image-meta-is_public": "true"})
        own = await self.image("admin")
        self.assertEqual(await self.ids("admin"), {public["id"], own["id"]})
        self.assertEqual(await self.ids("admin", "?is_public=none"),
                         {public["id"], own["id"], private["id"]})
        self.assertEqual(await self.ids("admin", "?is_public=false"),
                         {own["id"], private["id"]})
        # Non-admins' is_public is ignored.
        self.assertEqual(await self.ids("bob", "?is_public=none"), {public["id"]})
        self.assertEqual(await self.ids("bob", "?is_public=false"), {public["id"]})

    @async_test
    async def test_publicImages(self):
        await self.start()
        body = await self.image("alice", headers={"x-image-meta-is_public": "true"}, expect=403)
        self.assertIn(b"publicize_image", body)
        img = await self.image("alice")
        await self.as_("alice", "PUT", "/v1/images/" + img["id"],
                       {"x-image-meta-is_public": "true"}, expect=403)
        await self.as_("admin", "PUT", "/v1/images/" + img["id"],
                       {"x-image-meta-is_public": "true"}, expect=200)
        self.assertIn(img["id"], await self.ids("bob"))
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=200)
        await self.as_("bob", "PUT", "/v1/images/" + img["id"],
                       {"x-image-meta-name": "mine"}, expect=403)
        await self.as_("bob", "DELETE", "/v1/images/" + img["id"], expect=403)
        await self.as_("bob", "PUT", "/v1/images/%s/members/t-bob" % img["id"], expect=403)

    @async_test
    async def test_ownerIsCallerAndOnlyAdminsSetIt(self):
        await self.start()
        img = await self.image("alice")
        self.assertEqual(img["owner"], "t-alice")
        # A non-admin's owner is ignored, as Glance's registry ignored it:
        # the image is the caller's, and an update leaves the owner be.
        mine = await self.image("alice", headers={"x-image-meta-owner": "t-bob"})
        self.assertEqual(mine["owner"], "t-alice")
        resp, body = await self.as_("alice", "PUT", "/v1/images/" + img["id"],
                                    {"x-image-meta-owner": "t-bob"}, expect=200)
        self.assertEqual(json.loads(body)["image"]["owner"], "t-alice")
        resp, body = await self.as_("admin", "PUT", "/v1/images/" + img["id"],
                                    {"x-image-meta-owner": "t-bob"}, expect=200)
        self.assertEqual(json.loads(body)["image"]["owner"], "t-bob")
        await self.as_("bob", "PUT", "/v1/images/" + img["id"],
                       {"x-image-meta-name": "now bob's"}, expect=200)
        given = await self.image("admin", headers={"x-image-meta-owner": "t-carol"})
        self.assertEqual(given["owner"], "t-carol")

    # -- sharing ----------------------------------------------------------------

    @async_test
    async def test_sharing(self):
        await self.start()
        img = await self.image("alice")
        members = "/v1/images/%s/members" % (img["id"],)
        await self.as_("alice", "PUT", members + "/t-bob", expect=204)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=200)
        self.assertIn(img["id"], await self.ids("bob"))
        resp, body = await self.as_("bob", "GET", "/v1/shared-images/t-bob", expect=200)
        self.assertEqual(json.loads(body)["shared_images"],
                         [{"image_id": img["id"], "can_share": False}])
        # A member may not change or delete the image ...
        await self.as_("bob", "PUT", "/v1/images/" + img["id"],
                       {"x-image-meta-name": "x"}, expect=403)
        await self.as_("bob", "DELETE", "/v1/images/" + img["id"], expect=403)
        # ... nor reshare without can_share.
        await self.as_("bob", "PUT", members + "/t-carol", expect=403)
        await self.as_("bob", "PUT", members, {}, b'{"memberships": []}', expect=403)
        await self.as_("carol", "GET", "/v1/images/" + img["id"], expect=404)
        # With can_share, bob may add carol; still not replace or remove.
        await self.as_("alice", "PUT", members + "/t-bob", {},
                       b'{"member": {"can_share": true}}', expect=204)
        await self.as_("bob", "PUT", members + "/t-carol", expect=204)
        await self.as_("carol", "GET", "/v1/images/" + img["id"], expect=200)
        await self.as_("bob", "DELETE", members + "/t-carol", expect=403)
        await self.as_("bob", "PUT", members, {}, b'{"memberships": []}', expect=403)
        # Carol (no can_share) can see but not share further.
        await self.as_("carol", "PUT", members + "/t-admin", expect=403)
        # The owner removes everyone.
        await self.as_("alice", "PUT", members, {}, b'{"memberships": []}', expect=204)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=404)
        await self.as_("carol", "GET", "/v1/images/" + img["id"], expect=404)
        # A stranger asking about another tenant's shares learns nothing.
        await self.as_("alice", "PUT", members + "/t-carol", expect=204)
        resp, body = await self.as_("bob", "GET", "/v1/shared-images/t-carol", expect=200)
        self.assertEqual(json.loads(body)["shared_images"], [])
        resp, body = await self.as_("admin", "GET", "/v1/shared-images/t-carol", expect=200)
        self.assertEqual(len(json.loads(body)["shared_images"]), 1)

    @async_test
    async def test_membersSeeOnlyTheirOwnMembership(self):
        """
        As in Glance, a tenant sees the membership rows of images it owns
        and its own rows, no one else's: a member does not learn who else
        an image is shared with, even an image it can see.
        """
        await self.start()
        img = await self.image("alice")
        members = "/v1/images/%s/members" % (img["id"],)
        await self.as_("alice", "PUT", members + "/t-bob", expect=204)
        await self.as_("alice", "PUT", members + "/t-carol", expect=204)
        resp, body = await self.as_("bob", "GET", members, expect=200)
        self.assertEqual(json.loads(body)["members"],
                         [{"member_id": "t-bob", "can_share": False}])
        await self.as_("bob", "GET", members + "/t-bob", expect=200)
        await self.as_("bob", "GET", members + "/t-carol", expect=404)
        resp, body = await self.as_("bob", "GET", "/v1/shared-images/t-carol", expect=200)
        self.assertEqual(json.loads(body)["shared_images"], [])
        resp, body = await self.as_("alice", "GET", "/v1/shared-images/t-carol", expect=200)
        self.assertEqual(json.loads(body)["shared_images"],
                         [{"image_id": img["id"], "can_share": False}])
        for who in ("alice", "admin"):
            resp, body = await self.as_(who, "GET", members, expect=200)
            self.assertEqual(len(json.loads(body)["members"]), 2)

    # -- read-only ------------------------------------------------------------

    @async_test
    async def test_readOnly(self):
        await self.start()
        img = await self.image("alice")
        await self.as_("reader", "GET", "/v1/images/" + img["id"], expect=200)
        await self.as_("reader", "GET", "/v1/images/detail", expect=200)
        for method, path, headers, data in [
                ("POST", "/v1/images", RAW, None),
                ("PUT", "/v1/images/" + img["id"], {"x-image-meta-name": "x"}, None),
                ("DELETE", "/v1/images/" + img["id"], None, None),
                ("PUT", "/v1/images/%s/members/t-bob" % img["id"], None, None),
                ("PUT", "/v1/images/%s/members" % img["id"], None, b'{"memberships": []}'),
                ("DELETE", "/v1/images/%s/members/t-bob" % img["id"], None, None)]:
            resp, body = await self.as_("reader", method, path, headers, data)
            self.assertEqual(resp.code, 403, (method, path, body))

    # -- policy file ----------------------------------------------------------

    @async_test
    async def test_policyFileAndReload(self):
        policy = os.path.abspath(self.mktemp())
        with open(policy, "w") as f:
            json.dump({"delete_image": "role:admin", "download_image": "tenant:%(owner)s"
                       " or role:admin"}, f)
        await self.start(policy_file=policy)
        img = await self.image("alice")
        await self.as_("alice", "PUT", "/v1/images/%s/members/t-bob" % img["id"], expect=204)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=403)
        await self.as_("bob", "HEAD", "/v1/images/" + img["id"], expect=200)
        await self.as_("alice", "DELETE", "/v1/images/" + img["id"], expect=403)
        # New rules on disk take effect without a restart.
        with open(policy, "w") as f:
            json.dump({"delete_image": ""}, f)
        later = time.time() + 5
        os.utime(policy, (later, later))
        await deferLater(reactor, 1.2, lambda: None)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=200)
        # A malformed new version is ignored: the previous rules stay.
        with open(policy, "w") as f:
            f.write("{ not json")
        os.utime(policy, (later + 5, later + 5))
        await deferLater(reactor, 1.2, lambda: None)
        await self.as_("alice", "DELETE", "/v1/images/" + img["id"], expect=200)

    async def startWithPolicy(self, rules):
        policy = os.path.abspath(self.mktemp())
        with open(policy, "w") as f:
            json.dump(rules, f)
        await self.start(policy_file=policy)

    @async_test
    async def test_dataRules(self):
        """
        Glance v1's copy_from, upload_image and set_image_location rules
        govern how a create or update supplies data; an operator who keeps
        them to admins has members refused (before the source is even
        looked at), and a plain reservation still allowed.
        """
        await self.startWithPolicy({"copy_from": "role:admin", "upload_image": "role:admin",
                                    "set_image_location": "role:admin"})
        for header in ("x-glance-api-copy-from", "x-image-meta-location"):
            body = await self.image("alice", data=None,
                                    headers={header: "http://203.0.113.9/image"}, expect=403)
            self.assertIn(b"copy_from" if "copy" in header else b"set_image_location", body)
        body = await self.image("alice", expect=403)
        self.assertIn(b"upload_image", body)
        reserved = await self.image("alice", data=None)
        self.assertEqual(reserved["status"], "queued")
        path = "/v1/images/" + reserved["id"]
        for headers, data, rule in (
                ({"content-type": "application/octet-stream"}, b"bytes", b"upload_image"),
                ({"x-glance-api-copy-from": "http://203.0.113.9/image"}, None, b"copy_from"),
                ({"x-image-meta-location": "http://203.0.113.9/image"}, None,
                 b"set_image_location")):
            resp, body = await self.as_("alice", "PUT", path, headers, data, expect=403)
            self.assertIn(rule, body)
        resp, _ = await self.as_("alice", "HEAD", path, expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-status"), "queued")
        self.assertEqual((await self.image("admin"))["status"], "active")

    @async_test
    async def test_addingOneMemberIsModifyMember(self):
        """
        Glance v1 checked modify_member when one member is added, as when
        the list is replaced: with it kept to admins, an owner cannot share
        one member at a time either.
        """
        await self.startWithPolicy({"modify_member": "role:admin"})
        img = await self.image("alice")
        await self.as_("alice", "PUT", "/v1/images/%s/members/t-bob" % img["id"], expect=403)
        await self.as_("alice", "PUT", "/v1/images/%s/members" % img["id"],
                       {"content-type": "application/json"},
                       json.dumps({"memberships": [{"member_id": "t-bob"}]}).encode(),
                       expect=403)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=404)
        await self.as_("admin", "PUT", "/v1/images/%s/members/t-bob" % img["id"], expect=204)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=200)

    @async_test
    async def test_replacingMembersChecksAddAndDelete(self):
        """
        Replacing the member list is held to the rules of what it does: a
        list that adds a tenant is checked against add_member and one that
        drops a tenant against delete_member, so neither rule can be got
        round by sending the whole list instead of one member.
        """
        await self.startWithPolicy({"add_member": "role:admin", "delete_member": "role:admin"})
        img = await self.image("alice")
        members = "/v1/images/%s/members" % img["id"]

        async def replace(who, tenants, expect):
            body = json.dumps({"memberships": [{"member_id": t} for t in tenants]}).encode()
            resp, answer = await self.as_(who, "PUT", members,
                                          {"content-type": "application/json"}, body,
                                          expect=expect)
            return answer

        self.assertIn(b"add_member", await replace("alice", ["t-bob"], 403))
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=404)
        await replace("admin", ["t-bob"], 204)
        # The same list again, or can_share changed, adds and drops no one.
        await replace("alice", ["t-bob"], 204)
        self.assertIn(b"delete_member", await replace("alice", [], 403))
        self.assertIn(b"add_member", await replace("alice", ["t-bob", "t-carol"], 403))
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=200)
        await self.as_("carol", "GET", "/v1/images/" + img["id"], expect=404)
        await replace("admin", [], 204)
        await self.as_("bob", "GET", "/v1/images/" + img["id"], expect=404)

    @async_test
    async def test_dottedPropertyNameCannotFakeAnother(self):
        """
        A rule that names a property under C{properties} sees that property
        only: a property the caller sets whose own name is
        C{properties.restricted} does not stand in for C{restricted}.
        """
        await self.startWithPolicy(
            {"download_image": "role:admin or not 'true':%(properties.restricted)s"})
        img = await self.image("admin", headers={"x-image-meta-is-public": "true",
                                                 "x-image-meta-property-restricted": "true"})
        await self.as_("alice", "GET", "/v1/images/" + img["id"], expect=403)
        mine = await self.image("alice", headers={
            "x-image-meta-property-restricted": "true",
            "x-image-meta-property-properties.restricted": "false"})
        await self.as_("alice", "GET", "/v1/images/" + mine["id"], expect=403)
        free = await self.image("alice", headers={"x-image-meta-property-restricted": "no"})
        await self.as_("alice", "GET", "/v1/images/" + free["id"], expect=200)

    @async_test
    async def test_policySeesPropertiesByName(self):
        """
        A rule names a property as Glance v1's did, at the top level: a
        download restriction on a property is enforced, not lifted by the
        property seeming absent (which under "not" allowed it).
        """
        await self.startWithPolicy(
            {"download_image": "not ('true':%(restricted)s and role:member)"})
        restricted = await self.image(
            "alice", headers={"x-image-meta-property-restricted": "true"})
        free = await self.image("alice", headers={"x-image-meta-property-restricted": "no"})
        await self.as_("alice", "GET", "/v1/images/" + restricted["id"], expect=403)
        await self.as_("alice", "GET", "/v1/images/" + free["id"], expect=200)
        await self.as_("admin", "GET", "/v1/images/" + restricted["id"], expect=200)

    # -- property protections -------------------------------------------------

    @async_test
    async def test_propertyProtections(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[^x_billing_.*]\ncreate = admin\nread = admin,member\n"
                    "update = admin\ndelete = admin\n"
                    "[^x_secret$]\ncreate = admin\nread = admin\nupdate = admin\ndelete = admin\n"
                    "[.*]\ncreate = @\nread = @\nupdate = @\ndelete = @\n")
        await self.start(property_protection_file=path)
        await self.image("alice", headers={"x-image-meta-property-x_billing_code": "1"},
                         expect=403)
        img = await self.image("alice", headers={"x-image-meta-property-os": "linux"})
        await self.as_("admin", "PUT", "/v1/images/" + img["id"], {
            "x-glance-registry-purge-props": "false",
            "x-image-meta-property-x_billing_code": "42",
            "x-image-meta-property-x_secret": "s3cr3t"}, expect=200)
        resp, _ = await self.as_("alice", "HEAD", "/v1/images/" + img["id"], expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-property-x_billing_code"), "42")
        self.assertIsNone(self.header(resp, "x-image-meta-property-x_secret"))
        resp, body = await self.as_("alice", "GET", "/v1/images/detail", expect=200)
        self.assertNotIn(b"x_secret", body)
        self.assertNotIn(b"s3cr3t", body)
        await self.as_("alice", "PUT", "/v1/images/" + img["id"], {
            "x-glance-registry-purge-props": "false",
            "x-image-meta-property-x_billing_code": "43"}, expect=403)
        # Dropping a readable protected property is a delete: refused.
        await self.as_("alice", "PUT", "/v1/images/" + img["id"],
                       {"x-image-meta-property-os": "linux"}, expect=403)
        # Purging keeps what alice cannot see, and her own may go.
        await self.as_("alice", "PUT", "/v1/images/" + img["id"], {
            "x-image-meta-property-x_billing_code": "42"}, expect=200)
        resp, _ = await self.as_("admin", "HEAD", "/v1/images/" + img["id"], expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-property-x_secret"), "s3cr3t")
        self.assertIsNone(self.header(resp, "x-image-meta-property-os"))

    @async_test
    async def test_unreadablePropertyIsNoOracle(self):
        """
        A property the caller may not read cannot be found by guessing: an
        update naming it is refused whatever the value (the right one was
        let through as a no-op, a wrong one refused), and a list filtered
        on it shows nothing either way.
        """
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("[^secret_.*]\ncreate = admin\nread = admin\nupdate = admin\n"
                    "delete = admin\n[.*]\ncreate = @\nread = @\nupdate = @\ndelete = @\n")
        await self.start(property_protection_file=path)
        img = await self.image("alice")
        await self.as_("admin", "PUT", "/v1/images/" + img["id"], {
            "x-glance-registry-purge-props": "false",
            "x-image-meta-property-secret_pin": "4711"}, expect=200)
        for guess in ("4711", "1234"):
            await self.as_("alice", "PUT", "/v1/images/" + img["id"], {
                "x-glance-registry-purge-props": "false",
                "x-image-meta-property-secret_pin": guess}, expect=403)
            self.assertEqual(await self.ids("alice", "?property-secret_pin=" + guess), set())
        self.assertEqual(await self.ids("admin", "?is_public=none&property-secret_pin=4711"),
                         {img["id"]})
        resp, _ = await self.as_("admin", "HEAD", "/v1/images/" + img["id"], expect=200)
        self.assertEqual(self.header(resp, "x-image-meta-property-secret_pin"), "4711")


class TokensModeTests(TenancyMixin, TestCase):
    def baseOptions(self):
        path = os.path.abspath(self.mktemp())
        with open(path, "w") as f:
            f.write("# token user tenant roles\n")
            for name, (user, tenant, roles) in PEOPLE.items():
                f.write("tok-%s %s %s %s\n" % (name, user, tenant, roles))
        self.tokensFile = path
        return {"auth_strategy": "tokens", "tokens_file": path}

    def who(self, name):
        return {"X-Auth-Token": "tok-" + name}

    @async_test
    async def test_noOrBadToken(self):
        await self.start()
        for headers in ({}, {"X-Auth-Token": "nope"}, {"X-Auth-Token": ""},
                        {"X-Auth-Token": "tok-alicex"}):
            resp, body = await self.request("GET", "/v1/images", headers)
            self.assertEqual(resp.code, 401, headers)
            resp, body = await self.request("POST", "/v1/images", headers)
            self.assertEqual(resp.code, 401, headers)

    @async_test
    async def test_tokensFileReloaded(self):
        await self.start()
        await self.as_("alice", "GET", "/v1/images", expect=200)
        with open(self.tokensFile, "a") as f:
            f.write("tok-dave u-dave t-dave member\n")
        later = time.time() + 5
        os.utime(self.tokensFile, (later, later))
        await deferLater(reactor, 1.2, lambda: None)
        await self.request("GET", "/v1/images", {"X-Auth-Token": "tok-dave"}, expect=200)


class KeystoneModeTests(TenancyMixin, TestCase):
    def baseOptions(self):
        return {"auth_strategy": "keystone"}

    def who(self, name):
        user, tenant, roles = PEOPLE[name]
        return {"X-Identity-Status": "Confirmed", "X-User-Id": user,
                "X-Tenant-Id": tenant, "X-Roles": roles, "X-Auth-Token": "t"}

    @async_test
    async def test_unconfirmedIdentity(self):
        await self.start()
        alice = self.who("alice")
        for status in (None, "Invalid", "confirmed-ish"):
            h = dict(alice)
            if status is None:
                del h["X-Identity-Status"]
            else:
                h["X-Identity-Status"] = status
            resp, body = await self.request("GET", "/v1/images", h)
            self.assertEqual(resp.code, 401, status)

    @async_test
    async def test_projectIdHeader(self):
        await self.start()
        h = self.who("alice")
        del h["X-Tenant-Id"]
        h["X-Project-Id"] = "t-alice"
        img = await self.image("alice")
        await self.request("GET", "/v1/images/" + img["id"], h, expect=200)
