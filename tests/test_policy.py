"""
Tests for L{glancetx.policy}.
"""

import json
import os

from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs
from twisted.trial.unittest import TestCase

from glancetx.errors import ConfigError
from glancetx.policy import Policy, WatchedFile, credsFor, parseRule
from glancetx.context import RequestContext


def rulesPolicy(**rules):
    return Policy.fromText(json.dumps(rules))


def writeFile(path, text, mtime):
    """
    Write C{text} and set an explicit modification time, so that a change
    is seen whatever the file system's timestamp granularity.
    """
    with open(path, "w") as f:
        f.write(text)
    os.utime(path, ns=(mtime * 10**9, mtime * 10**9))


class RuleLanguageTests(TestCase):
    """
    The rule language, checked through L{Policy.enforce} on rule C{r}.
    """

    def allowed(self, rule, roles=(), target=None, **creds):
        creds["roles"] = list(roles)
        return rulesPolicy(r=rule).enforce("r", target or {}, creds)

    def test_role(self):
        self.assertTrue(self.allowed("role:member", ["member"]))
        self.assertFalse(self.allowed("role:member", ["other"]))

    def test_roleCaseInsensitive(self):
        self.assertTrue(self.allowed("role:Admin", ["ADMIN"]))

    def test_alwaysAndNever(self):
        self.assertTrue(self.allowed("@"))
        self.assertFalse(self.allowed("!", ["admin"]))

    def test_emptyIsAlways(self):
        self.assertTrue(self.allowed(""))
        self.assertTrue(self.allowed("   "))

    def test_andBindsTighterThanOr(self):
        rule = "role:a or role:b and role:c"
        self.assertTrue(self.allowed(rule, ["a"]))
        self.assertFalse(self.allowed(rule, ["b"]))
        self.assertTrue(self.allowed(rule, ["b", "c"]))

    def test_andBindsTighterThanOrOnTheLeft(self):
        rule = "role:a and role:b or role:c"
        self.assertTrue(self.allowed(rule, ["c"]))
        self.assertFalse(self.allowed(rule, ["a"]))

    def test_notBindsTighterThanAnd(self):
        rule = "not role:a and role:b"
        self.assertTrue(self.allowed(rule, ["b"]))
        self.assertFalse(self.allowed(rule, ["a", "b"]))
        # not (a and b) would allow this:
        self.assertFalse(self.allowed(rule, []))

    def test_notBindsTighterThanOr(self):
        # not (a or b) would refuse this:
        self.assertTrue(self.allowed("not role:a or role:b", ["a", "b"]))

    def test_doubleNot(self):
        self.assertTrue(self.allowed("not not role:a", ["a"]))
        self.assertFalse(self.allowed("not not role:a", []))

    def test_parentheses(self):
        rule = "(role:a or role:b) and role:c"
        self.assertFalse(self.allowed(rule, ["a"]))
        self.assertTrue(self.allowed(rule, ["b", "c"]))

    def test_nestedParenthesesWithoutSpaces(self):
        rule = "((role:a or role:b)) and (not (role:c))"
        self.assertTrue(self.allowed(rule, ["a"]))
        self.assertFalse(self.allowed(rule, ["a", "c"]))

    def test_notOfParentheses(self):
        rule = "not (role:a or role:b)"
        self.assertFalse(self.allowed(rule, ["b"]))
        self.assertTrue(self.allowed(rule, ["c"]))

    def test_keywordsAnyCase(self):
        self.assertTrue(self.allowed("role:a OR role:b", ["b"]))
        self.assertFalse(self.allowed("NOT role:b", ["b"]))

    def test_tenantMatchesTargetOwner(self):
        rule = "tenant:%(owner)s"
        self.assertTrue(self.allowed(rule, target={"owner": "t1"}, tenant="t1"))
        self.assertFalse(self.allowed(rule, target={"owner": "t2"}, tenant="t1"))

    def test_projectIdAliasesTenant(self):
        self.assertTrue(
            self.allowed("project_id:%(owner)s", target={"owner": "t1"}, tenant="t1")
        )
        self.assertTrue(
            self.allowed("tenant:%(owner)s", target={"owner": "t1"}, project_id="t1")
        )

    def test_userIdAliasesUser(self):
        self.assertTrue(self.allowed("user_id:u1", user="u1"))
        self.assertTrue(self.allowed("user:u1", user_id="u1"))

    def test_noneNeverMatches(self):
        """
        An owner-less image does not match a tenant-less caller (oslo.policy
        compared "None" with "None").
        """
        rule = "tenant:%(owner)s"
        self.assertFalse(self.allowed(rule, target={"owner": None}, tenant=None))
        self.assertFalse(self.allowed(rule, target={}, tenant="None"))
        self.assertFalse(self.allowed("tenant:None", tenant=None))

    def test_missingTargetAttributeDenies(self):
        self.assertFalse(self.allowed("tenant:%(owner)s", target={}, tenant="t"))

    def test_literalOnTheRight(self):
        self.assertTrue(self.allowed("is_admin:True", is_admin=True))
        self.assertFalse(self.allowed("is_admin:True", is_admin=False))
        self.assertFalse(self.allowed("is_admin:True"))

    def test_literalOnTheLeft(self):
        rule = "'shared':%(visibility)s"
        self.assertTrue(self.allowed(rule, target={"visibility": "shared"}))
        self.assertFalse(self.allowed(rule, target={"visibility": "private"}))
        self.assertTrue(self.allowed("True:%(is_public)s", target={"is_public": True}))

    def test_dottedCredentialPath(self):
        rule = "token.project.id:%(owner)s"
        creds = {"token": {"project": {"id": "p"}}}
        self.assertTrue(self.allowed(rule, target={"owner": "p"}, **creds))
        self.assertFalse(self.allowed(rule, target={"owner": "q"}, **creds))

    def test_dottedTargetPathFollowsTheNesting(self):
        """
        C{%(properties.restricted)s} is the C{restricted} property: a flat
        key that happens to be spelt the same does not shadow it.
        """
        rule = "not 'true':%(properties.restricted)s"
        target = {"properties": {"restricted": "true"}, "properties.restricted": "false"}
        self.assertFalse(self.allowed(rule, target=target))
        self.assertTrue(self.allowed(rule, target={"properties": {"restricted": "no"}}))

    def test_dottedNameInsideAMapping(self):
        """
        A property whose own name holds a dot is still found under
        C{properties}, and a flat dotted key where nothing nests.
        """
        self.assertTrue(self.allowed("'x':%(properties.a.b)s",
                                     target={"properties": {"a.b": "x"}}))
        self.assertTrue(self.allowed("'x':%(a.b)s", target={"a.b": "x"}))
        self.assertFalse(self.allowed("'x':%(properties.a.b)s",
                                      target={"properties": {"a": "x"}}))

    def test_listCredentialMatchesAnyElement(self):
        self.assertTrue(self.allowed("groups:g2", groups=["g1", "g2"]))
        self.assertFalse(self.allowed("groups:g3", groups=["g1", "g2"]))

    def test_roleFromTarget(self):
        rule = "role:%(needed)s"
        self.assertTrue(self.allowed(rule, ["x"], target={"needed": "x"}))
        self.assertFalse(self.allowed(rule, ["x"], target={}))

    def test_rightSideWithColon(self):
        self.assertTrue(self.allowed("user:a:b", user="a:b"))


class ListFormTests(TestCase):
    def test_outerOrInnerAnd(self):
        policy = rulesPolicy(r=[["role:a", "role:b"], ["role:c"]])
        self.assertTrue(policy.enforce("r", {}, {"roles": ["a", "b"]}))
        self.assertFalse(policy.enforce("r", {}, {"roles": ["a"]}))
        self.assertTrue(policy.enforce("r", {}, {"roles": ["c"]}))

    def test_emptyListAlways(self):
        self.assertTrue(rulesPolicy(r=[]).enforce("r", {}, {"roles": []}))

    def test_onlyEmptyAlternativesNever(self):
        self.assertFalse(rulesPolicy(r=[[]]).enforce("r", {}, {"roles": ["a"]}))

    def test_bareStringsInOuterList(self):
        policy = rulesPolicy(r=["role:a", "role:b"])
        self.assertTrue(policy.enforce("r", {}, {"roles": ["b"]}))
        self.assertFalse(policy.enforce("r", {}, {"roles": ["c"]}))

    def test_notAStringInside(self):
        self.assertRaises(ConfigError, rulesPolicy, r=[[1]])


class NamedRuleTests(TestCase):
    def test_nestedRules(self):
        policy = rulesPolicy(
            r="rule:b and role:x", b="rule:c or role:y", c="tenant:%(owner)s"
        )
        creds = {"roles": ["x"], "tenant": "t"}
        self.assertTrue(policy.enforce("r", {"owner": "t"}, creds))
        self.assertFalse(policy.enforce("r", {"owner": "u"}, creds))
        self.assertTrue(policy.enforce("r", {"owner": "u"}, {"roles": ["x", "y"]}))

    def test_referenceToUndefinedRuleDenies(self):
        policy = rulesPolicy(r="rule:nothing or role:x")
        self.assertFalse(policy.enforce("r", {}, {"roles": []}))
        self.assertTrue(policy.enforce("r", {}, {"roles": ["x"]}))

    def test_referenceToUndefinedRuleIsLogged(self):
        """
        A rule that names no rule says so once, at load time: a misspelt
        name in C{default} refused every request with a 403, and nothing
        said why.
        """
        from twisted.logger import capturedLogs
        with capturedLogs() as events:
            rulesPolicy(default="rule:nosuch")
        self.assertEqual([e["log_format"].format(**e) for e in events],
                         ["policy rule 'default' refers to rule 'nosuch', which is not"
                          " defined: that part of it never allows"])

    def test_unknownNameFallsToDefault(self):
        policy = rulesPolicy(default="role:admin")
        self.assertFalse(policy.enforce("get_image", {}, {"roles": ["member"]}))
        self.assertTrue(policy.enforce("get_image", {}, {"roles": ["admin"]}))

    def test_builtInDefaultAllows(self):
        policy = Policy.defaults()
        self.assertTrue(policy.enforce("get_image", {}, {"roles": []}))
        self.assertTrue(policy.enforce("no_such_rule", {}, {"roles": []}))

    def test_builtInAdminRules(self):
        policy = Policy.defaults()
        for name in ("publicize_image", "manage_image_cache", "context_is_admin"):
            self.assertFalse(policy.enforce(name, {}, {"roles": ["member"]}), name)
            self.assertTrue(policy.enforce(name, {}, {"roles": ["admin"]}), name)

    def test_fileKeepsBuiltInsItDoesNotName(self):
        policy = rulesPolicy(add_image="role:uploader")
        self.assertFalse(policy.enforce("publicize_image", {}, {"roles": ["uploader"]}))
        self.assertTrue(policy.enforce("add_image", {}, {"roles": ["uploader"]}))

    def test_fileOverridesBuiltIn(self):
        policy = rulesPolicy(publicize_image="")
        self.assertTrue(policy.enforce("publicize_image", {}, {"roles": []}))

    def test_isAdmin(self):
        policy = rulesPolicy(context_is_admin="role:cloud_admin or user:root")
        self.assertTrue(policy.isAdmin(["cloud_admin"], "t", "u"))
        self.assertTrue(policy.isAdmin([], "t", "root"))
        self.assertFalse(policy.isAdmin(["admin"], "t", "u"))

    def test_isAdminDefault(self):
        self.assertTrue(Policy.defaults().isAdmin(["admin"], None, None))
        self.assertFalse(Policy.defaults().isAdmin(["member"], "t", "u"))

    def test_hasRule(self):
        policy = rulesPolicy(mine="@")
        self.assertTrue(policy.hasRule("mine"))
        self.assertTrue(policy.hasRule("publicize_image"))
        self.assertFalse(policy.hasRule("get_image"))

    def test_credsFor(self):
        context = RequestContext(user="u", tenant="t", roles={"b", "a"}, is_admin=True)
        creds = credsFor(context)
        self.assertEqual(creds["roles"], ["a", "b"])
        self.assertEqual((creds["tenant"], creds["project_id"]), ("t", "t"))
        self.assertEqual((creds["user"], creds["user_id"]), ("u", "u"))
        self.assertIs(creds["is_admin"], True)


class MalformedTests(TestCase):
    def assertBad(self, text, fragment):
        e = self.assertRaises(ConfigError, Policy.fromText, text)
        self.assertTrue(str(e).startswith("policy_file: "), str(e))
        self.assertIn(fragment, str(e))
        return e

    def assertBadRule(self, rule):
        self.assertBad(json.dumps({"r": rule}), "'r'")

    def test_badSyntax(self):
        for rule in [
            "role:a and",
            "and role:a",
            "role:a or or role:b",
            "(role:a",
            "role:a)",
            "role:a role:b",
            "not",
            "()",
            "noColon",
            ":x",
            "rule:",
            "role:",
        ]:
            self.assertRaises(ConfigError, rulesPolicy, r=rule)

    def test_badRuleNamed(self):
        self.assertBadRule("role:a and")

    def test_httpRefused(self):
        self.assertBadRule("http://example.com/check")

    def test_notAMapping(self):
        self.assertBad("[1, 2]", "mapping")

    def test_ruleNotAString(self):
        self.assertBadRule(3)

    def test_empty(self):
        self.assertBad("  \n", "empty")

    def test_neitherJsonNorYaml(self):
        self.assertBad("{a: [", "neither JSON nor YAML")

    def test_cycle(self):
        self.assertBad(json.dumps({"a": "rule:b", "b": "role:x or rule:a"}), "loop")

    def test_selfReference(self):
        self.assertBad(json.dumps({"a": "not rule:a"}), "loop")

    def test_parseRuleReportsReason(self):
        self.assertRaises(ValueError, parseRule, "role:a and")
        self.assertRaises(ValueError, parseRule, {"a": 1})


class FileTests(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1000)

    def test_json(self):
        writeFile(self.path, json.dumps({"add_image": "role:a"}), 1)
        policy = Policy.fromFile(self.path, self.clock)
        self.assertTrue(policy.enforce("add_image", {}, {"roles": ["a"]}))
        self.assertFalse(policy.enforce("add_image", {}, {"roles": ["b"]}))

    def test_yaml(self):
        writeFile(
            self.path,
            "# comment\n"
            "add_image: 'role:a or role:b'\n"
            "delete_image:\n  - [role:c, 'tenant:%(owner)s']\n",
            1,
        )
        policy = Policy.fromFile(self.path, self.clock)
        self.assertTrue(policy.enforce("add_image", {}, {"roles": ["b"]}))
        self.assertTrue(
            policy.enforce("delete_image", {"owner": "t"}, {"roles": ["c"], "tenant": "t"})
        )
        self.assertFalse(policy.enforce("delete_image", {"owner": "t"}, {"roles": ["c"]}))

    def test_missing(self):
        e = self.assertRaises(ConfigError, Policy.fromFile, self.path, self.clock)
        self.assertTrue(str(e).startswith("policy_file: cannot read "), str(e))

    def test_malformed(self):
        writeFile(self.path, '{"a": "role:x and"}', 1)
        e = self.assertRaises(ConfigError, Policy.fromFile, self.path, self.clock)
        self.assertTrue(str(e).startswith("policy_file: rule 'a'"), str(e))

    def test_wallClockByDefault(self):
        writeFile(self.path, "{}", 1)
        policy = Policy.fromFile(self.path)
        self.assertTrue(policy.enforce("get_image", {}, {"roles": []}))


class ReloadTests(TestCase):
    def setUp(self):
        self.path = self.mktemp()
        self.clock = Clock()
        self.clock.advance(1000)
        writeFile(self.path, json.dumps({"add_image": "role:a"}), 1)
        self.policy = Policy.fromFile(self.path, self.clock)

    def allowsA(self):
        return self.policy.enforce("add_image", {}, {"roles": ["a"]})

    def allowsB(self):
        return self.policy.enforce("add_image", {}, {"roles": ["b"]})

    def test_reloadAfterChange(self):
        writeFile(self.path, json.dumps({"add_image": "role:b"}), 2)
        self.clock.advance(1)
        with capturedLogs() as events:
            self.assertTrue(self.allowsB())
        self.assertFalse(self.allowsA())
        self.assertEqual([e["log_level"] for e in events], [LogLevel.info])

    def test_notBeforeASecond(self):
        writeFile(self.path, json.dumps({"add_image": "role:b"}), 2)
        self.clock.advance(0.5)
        self.assertTrue(self.allowsA())
        self.clock.advance(0.5)
        self.assertTrue(self.allowsB())

    def test_statAtMostOncePerSecond(self):
        calls = []
        real = WatchedFile._stat

        def counting(path):
            calls.append(path)
            return real(path)

        # An instance attribute: patching the class would not restore the
        # staticmethod wrapper.
        self.policy._watched._stat = counting
        for _ in range(5):
            self.allowsA()
            self.clock.advance(0.1)
        self.assertEqual(len(calls), 0)
        self.clock.advance(0.6)
        for _ in range(5):
            self.allowsA()
        self.assertEqual(len(calls), 1)

    def test_unchangedFileNotReread(self):
        self.clock.advance(1)
        self.policy._watched.parse = lambda text: self.fail("re-read")
        self.assertTrue(self.allowsA())

    def test_malformedChangeKeepsOldRules(self):
        writeFile(self.path, '{"add_image": "role:b or"}', 2)
        self.clock.advance(1)
        with capturedLogs() as events:
            self.assertTrue(self.allowsA())
            self.assertFalse(self.allowsB())
            # Logged once, not on every check.
            self.clock.advance(1)
            self.assertTrue(self.allowsA())
        errors = [e for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["path"], self.path)
        self.assertIn("'add_image'", errors[0]["reason"])

    def test_fixedAfterMalformed(self):
        writeFile(self.path, "{", 2)
        self.clock.advance(1)
        with capturedLogs():
            self.assertTrue(self.allowsA())
        writeFile(self.path, json.dumps({"add_image": "role:b"}), 3)
        self.clock.advance(1)
        self.assertTrue(self.allowsB())

    def test_emptiedFileKeepsOldRules(self):
        writeFile(self.path, "", 2)
        self.clock.advance(1)
        with capturedLogs() as events:
            self.assertTrue(self.allowsA())
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error])

    def test_removedFileKeepsOldRulesThenReturns(self):
        os.remove(self.path)
        self.clock.advance(1)
        with capturedLogs() as events:
            self.assertTrue(self.allowsA())
            self.clock.advance(1)
            self.assertTrue(self.allowsA())
        self.assertEqual([e["log_level"] for e in events], [LogLevel.error])
        writeFile(self.path, json.dumps({"add_image": "role:b"}), 1)
        self.clock.advance(1)
        self.assertTrue(self.allowsB())

    def test_replacedFileSameMtimeAndSize(self):
        """
        A file replaced by rename (new inode) is seen even if its size and
        modification time are the same.
        """
        other = self.path + ".new"
        writeFile(other, json.dumps({"add_image": "role:b"}), 1)
        keep = self.path + ".old"
        os.rename(self.path, keep)  # keep the old inode alive
        os.rename(other, self.path)
        self.clock.advance(1)
        self.assertTrue(self.allowsB())
