"""
Tests for L{glancetx.protections}.
"""

import json

from twisted.trial.unittest import TestCase

from glancetx.context import RequestContext
from glancetx.errors import ConfigError
from glancetx.policy import Policy
from glancetx.protections import OPERATIONS, PropertyProtections


def ctx(*roles, tenant="t", user="u"):
    return RequestContext(user=user, tenant=tenant, roles=frozenset(roles))


ROLES_FILE = """\
[^x_owner_.*]
create = admin,Member
read = admin, member
update = admin
delete = admin

[^x_public_]
create = @
read = @
update = !
delete =

[.*]
create = admin
read = admin
update = admin
delete = admin
"""


class ProtectionsTestsMixin:
    def load(self, text, ruleFormat="roles", policy=None):
        path = self.mktemp()
        with open(path, "w") as f:
            f.write(text)
        return PropertyProtections.fromFile(path, ruleFormat, policy)

    def assertBad(self, text, fragment, ruleFormat="roles", policy=None):
        e = self.assertRaises(ConfigError, self.load, text, ruleFormat, policy)
        self.assertTrue(str(e).startswith("property_protection_file: "), str(e))
        self.assertIn(fragment, str(e))


class RolesFormatTests(ProtectionsTestsMixin, TestCase):
    def setUp(self):
        self.protections = self.load(ROLES_FILE)

    def test_rolesListed(self):
        check = self.protections.check
        self.assertTrue(check("x_owner_foo", "create", ctx("member")))
        self.assertTrue(check("x_owner_foo", "read", ctx("admin")))
        self.assertFalse(check("x_owner_foo", "update", ctx("member")))
        self.assertTrue(check("x_owner_foo", "update", ctx("admin")))

    def test_rolesCaseInsensitive(self):
        # "Member" in the file, "MEMBER" in the context.
        self.assertTrue(self.protections.check("x_owner_foo", "create", ctx("MEMBER")))

    def test_anyone(self):
        self.assertTrue(self.protections.check("x_public_a", "read", ctx()))
        self.assertTrue(self.protections.check("x_public_a", "create", ctx("x")))

    def test_nobody(self):
        self.assertFalse(self.protections.check("x_public_a", "update", ctx("admin")))

    def test_emptyValueIsNobody(self):
        self.assertFalse(self.protections.check("x_public_a", "delete", ctx("admin")))

    def test_firstMatchingSectionWins(self):
        # [.*] would allow admin to update x_public_*; the earlier section
        # says nobody.
        self.assertFalse(self.protections.check("x_public_b", "update", ctx("admin")))
        # ... and would refuse member creating x_owner_*.
        self.assertTrue(self.protections.check("x_owner_b", "create", ctx("member")))

    def test_fallThroughToCatchAll(self):
        self.assertFalse(self.protections.check("foo", "read", ctx("member")))
        self.assertTrue(self.protections.check("foo", "read", ctx("admin")))

    def test_regexSearchedAsGlance(self):
        """
        Glance used C{re.search}: an unanchored expression matches anywhere
        in the name.
        """
        protections = self.load("[owner]\ncreate=@\nread=@\nupdate=@\ndelete=@\n")
        self.assertTrue(protections.check("x_owner_y", "create", ctx()))
        self.assertFalse(protections.check("x_other_y", "create", ctx()))

    def test_anchoredRegex(self):
        protections = self.load("[^a$]\ncreate=@\nread=@\nupdate=@\ndelete=@\n")
        self.assertTrue(protections.check("a", "read", ctx()))
        self.assertFalse(protections.check("ab", "read", ctx()))
        self.assertFalse(protections.check("ba", "read", ctx()))

    def test_noMatchingSectionRefused(self):
        protections = self.load("[^a$]\ncreate=@\nread=@\nupdate=@\ndelete=@\n")
        for operation in OPERATIONS:
            self.assertFalse(protections.check("b", operation, ctx("admin")))

    def test_noSectionsAllowsEverything(self):
        protections = self.load("# nothing protected\n")
        self.assertTrue(protections.check("b", "delete", ctx()))

    def test_defaultSectionSuppliesMissingKeys(self):
        protections = self.load(
            "[DEFAULT]\nread = @\nupdate = !\ndelete = !\n\n[^a]\ncreate = admin\n"
        )
        self.assertTrue(protections.check("a1", "read", ctx()))
        self.assertTrue(protections.check("a1", "create", ctx("admin")))
        self.assertFalse(protections.check("a1", "update", ctx("admin")))

    def test_percentInRegex(self):
        protections = self.load("[^a%b$]\ncreate=@\nread=@\nupdate=@\ndelete=@\n")
        self.assertTrue(protections.check("a%b", "read", ctx()))

    def test_noAdminBypass(self):
        context = RequestContext(user="u", tenant="t", roles=frozenset(), is_admin=True)
        self.assertFalse(self.protections.check("x_owner_a", "update", context))

    def test_unknownOperation(self):
        self.assertRaises(ValueError, self.protections.check, "a", "write", ctx())

    def test_enabled(self):
        self.assertTrue(self.protections.enabled)
        self.assertFalse(PropertyProtections.allowAll().enabled)


class AllowAllTests(TestCase):
    def test_everythingAllowed(self):
        protections = PropertyProtections.allowAll()
        for operation in OPERATIONS:
            self.assertTrue(protections.check("anything", operation, ctx()))

    def test_unknownOperation(self):
        self.assertRaises(
            ValueError, PropertyProtections.allowAll().check, "a", "x", ctx()
        )


POLICY = {
    "glance_creator": "role:admin or role:creator",
    "member_reader": "role:member",
}

POLICIES_FILE = """\
[^x_billing_]
create = glance_creator
read = member_reader
update = !
delete = @
"""


class PoliciesFormatTests(ProtectionsTestsMixin, TestCase):
    def setUp(self):
        self.policy = Policy.fromText(json.dumps(POLICY))
        self.protections = self.load(POLICIES_FILE, "policies", self.policy)

    def test_policyRuleDecides(self):
        check = self.protections.check
        self.assertTrue(check("x_billing_a", "create", ctx("creator")))
        self.assertTrue(check("x_billing_a", "create", ctx("admin")))
        self.assertFalse(check("x_billing_a", "create", ctx("member")))
        self.assertTrue(check("x_billing_a", "read", ctx("member")))
        self.assertFalse(check("x_billing_a", "read", ctx("creator")))

    def test_roleNamesAreNotRoles(self):
        """
        In policies format the value names a rule, not a role.
        """
        self.assertFalse(self.protections.check("x_billing_a", "create", ctx("glance_creator")))

    def test_anyoneAndNobody(self):
        self.assertTrue(self.protections.check("x_billing_a", "delete", ctx()))
        self.assertFalse(self.protections.check("x_billing_a", "update", ctx("admin")))

    def test_contextCredentialsReachPolicy(self):
        policy = Policy.fromText(json.dumps({"mine": "tenant:t1 and user:u1"}))
        protections = self.load(
            "[a]\ncreate=mine\nread=mine\nupdate=mine\ndelete=mine\n", "policies", policy
        )
        self.assertTrue(protections.check("a", "read", ctx(tenant="t1", user="u1")))
        self.assertFalse(protections.check("a", "read", ctx(tenant="t2", user="u1")))

    def test_ruleGoneFromPolicyDenies(self):
        self.policy._rules.pop("glance_creator")
        self.assertFalse(self.protections.check("x_billing_a", "create", ctx("admin")))

    def test_multiplePoliciesRefused(self):
        self.assertBad(
            "[a]\ncreate=glance_creator,member_reader\nread=@\nupdate=@\ndelete=@\n",
            "one policy rule",
            "policies",
            self.policy,
        )

    def test_undefinedPolicyRule(self):
        self.assertBad(
            "[a]\ncreate=no_such\nread=@\nupdate=@\ndelete=@\n",
            "no policy rule called 'no_such'",
            "policies",
            self.policy,
        )

    def test_policyRequired(self):
        e = self.assertRaises(ConfigError, self.load, POLICIES_FILE, "policies", None)
        self.assertTrue(str(e).startswith("property_protection_rule_format: "))


class MalformedTests(ProtectionsTestsMixin, TestCase):
    def test_missingFile(self):
        e = self.assertRaises(
            ConfigError, PropertyProtections.fromFile, self.mktemp()
        )
        self.assertTrue(str(e).startswith("property_protection_file: cannot read"))

    def test_badRuleFormat(self):
        e = self.assertRaises(ConfigError, self.load, ROLES_FILE, "acl")
        self.assertTrue(str(e).startswith("property_protection_rule_format: "))

    def test_badRegex(self):
        self.assertBad("[x(]\ncreate=@\nread=@\nupdate=@\ndelete=@\n", "[x(]")

    def test_missingOperation(self):
        self.assertBad("[a]\ncreate=@\nread=@\nupdate=@\n", "no delete key")

    def test_unknownKey(self):
        self.assertBad("[a]\ncreate=@\nread=@\nupdate=@\ndelete=@\nwrite=@\n", "write")

    def test_anyoneWithNobody(self):
        self.assertBad("[a]\ncreate=@,!\nread=@\nupdate=@\ndelete=@\n", "stand alone")

    def test_nobodyWithRoles(self):
        self.assertBad("[a]\ncreate=admin,!\nread=@\nupdate=@\ndelete=@\n", "[a] create")

    def test_anyoneWithRoles(self):
        self.assertBad("[a]\ncreate=@\nread=@\nupdate=member, @\ndelete=@\n", "[a] update")

    def test_notIni(self):
        self.assertBad("create = admin\n", "no section")

    def test_duplicateSection(self):
        self.assertBad(
            "[a]\ncreate=@\nread=@\nupdate=@\ndelete=@\n[a]\ncreate=@\n", "already exists"
        )

    def test_messageIsOneLine(self):
        e = self.assertRaises(ConfigError, self.load, "[a]\ncreate=@\ncreate=!\n")
        self.assertNotIn("\n", str(e))
