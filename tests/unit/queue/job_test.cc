// job_test.cc - job header and recipient parsing, addresses, the recipient record,
// message and return-path rendering. Tables of input and the exact error wanted.
#include "queue/job.h"

#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "queue/template.h"

namespace volley::queue {
namespace {

using Vars = std::vector<std::pair<std::string, std::string>>;

const JobLimits kLimits;

// A header line with `extra` JSON members appended after the three required ones.
std::string Header(const std::string& extra = "") {
  std::string line = R"({"job": "spring-2024", "from": "news@example.com", )"
                     R"("message": "Subject: Hi {{name}}\n\nHello {{name}}\n")";
  if (!extra.empty()) absl::StrAppend(&line, ", ", extra);
  line += "}";
  return line;
}

std::string ErrorOf(const absl::Status& s) { return std::string(s.message()); }

TEST(CheckJobIdTest, DotsAndDashesInsideAnIdAreFine) {
  for (const char* id : {"spring-2024", "spring.2024", "a..b", "a-", "a.", "_x", "0"}) {
    EXPECT_TRUE(CheckJobId(id, kLimits).ok()) << id << ": " << CheckJobId(id, kLimits);
  }
  for (const char* id : {".", "..", "...", ".a", "-", "-a", "a/b", "a\tb", ""}) {
    EXPECT_TRUE(absl::IsInvalidArgument(CheckJobId(id, kLimits))) << id;
  }
}

TEST(ParseJobHeaderTest, Errors) {
  const struct {
    std::string line;
    std::string want;
  } cases[] = {
      // JSON structure.
      {"", "json: Empty: no JSON found"},
      {"[1]", "json: line must be a JSON object"},
      {R"({"job": "a")", "json: JSON document ended early in the middle of an object or array."},
      {R"({"job": "a", "from": "a@example.com", "message": "S: x", "priority": 1 2})",
       "json: The JSON document has an improper structure: missing or superfluous commas, "
       "braces, missing keys, etc."},
      {Header() + "}", "json: trailing data after the object"},
      {Header() + " {}", "json: trailing data after the object"},
      {"{\"job\": \"a\xff\"}", "json: The input is not valid UTF-8"},
      // Required fields.
      {R"({"from": "a@example.com", "message": "S: x"})", "job: missing"},
      {R"({"job": "a", "message": "S: x"})", "from: missing"},
      {R"({"job": "a", "from": "a@example.com"})", "message: missing"},
      // Unknown and duplicate keys.
      {Header(R"("colour": "red")"), "colour: unknown field"},
      {Header(R"("Job": "x")"), "Job: unknown field"},
      {Header(R"("a\r\nBcc": 1)"), "a??Bcc: unknown field"},
      {Header(R"("job": "again")"), "job: duplicate field"},
      {Header(R"("priority": 1, "priority": 2)"), "priority: duplicate field"},
      // job
      {R"({"job": "", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      {R"({"job": "a/b", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      {R"({"job": "a b", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      {R"({"job": ")" + std::string(129, 'j') + R"(", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      // The id names files (failed/<job>.rejects.jsonl): no folder, hidden file or option.
      {R"({"job": ".", "from": "a@example.com", "message": "S: x"})",
       "job: must not start with '.': the id names files in the spool (\".\" and \"..\" are "
       "folders, \".x\" a hidden file)"},
      {R"({"job": "..", "from": "a@example.com", "message": "S: x"})",
       "job: must not start with '.': the id names files in the spool (\".\" and \"..\" are "
       "folders, \".x\" a hidden file)"},
      {R"({"job": ".spring", "from": "a@example.com", "message": "S: x"})",
       "job: must not start with '.': the id names files in the spool (\".\" and \"..\" are "
       "folders, \".x\" a hidden file)"},
      {R"({"job": "-rf", "from": "a@example.com", "message": "S: x"})",
       "job: must not start with '-': the id names files in the spool, and a leading '-' reads "
       "as an option to rm, ls and the rest"},
      {R"({"job": "a\u0000b", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      {R"({"job": "a\u001fb", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      {R"({"job": 7, "from": "a@example.com", "message": "S: x"})", "job: must be a string"},
      // from
      {R"({"job": "a", "from": "nobody", "message": "S: x"})", "from: invalid address"},
      {R"({"job": "a", "from": "", "message": "S: x"})", "from: invalid address"},
      {R"({"job": "a", "from": "a@example.com\r\nRCPT TO:<v@x.example>", "message": "S: x"})",
       "from: contains CR or LF"},
      {R"({"job": "a", "from": "a\u0000@example.com", "message": "S: x"})",
       "from: contains NUL"},
      {R"({"job": "a", "from": null, "message": "S: x"})", "from: must be a string"},
      // message
      {R"({"job": "a", "from": "a@example.com", "message": "Subject: x\n\n{{oops\n"})",
       "message: line 3: unclosed {{"},
      {R"({"job": "a", "from": "a@example.com", "message": "Subject: x\n\nA\nB {{}}"})",
       "message: line 4: empty placeholder"},
      {R"({"job": "a", "from": "a@example.com", "message": "no header\n\nbody"})",
       "message: line 1: header section must start with a 'Name: value' field"},
      {R"({"job": "a", "from": "a@example.com", "message": "Subject: x\n\nbare\rCR"})",
       "message: line 3: bare CR"},
      {R"({"job": "a", "from": "a@example.com", "message": ["S: x"]})",
       "message: must be a string"},
      {R"({"job": "a", "from": "a@example.com", "message": "S: \q"})",
       "message: invalid JSON (Problem while parsing a string)"},
      // headers
      {Header(R"("headers": "X-A: 1")"), "headers: must be an object"},
      {Header(R"("headers": {"X-A": 1})"), "headers.X-A: must be a string"},
      {Header(R"("headers": {"X A": "1"})"),
       "headers.X A: invalid field name (1..76 printable ASCII, no ':' or space)"},
      {Header(R"("headers": {"X:A": "1"})"),
       "headers.X:A: invalid field name (1..76 printable ASCII, no ':' or space)"},
      {Header(R"("headers": {"": "1"})"),
       "headers.: invalid field name (1..76 printable ASCII, no ':' or space)"},
      {Header(R"("headers": {"X-A\r\nBcc": "v@x.example"})"),
       "headers.X-A??Bcc: invalid field name (1..76 printable ASCII, no ':' or space)"},
      {Header(R"("headers": {")" + std::string(77, 'H') + R"(": "1"})"),
       "headers.HHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHHH...: "
       "invalid field name (1..76 printable ASCII, no ':' or space)"},
      {Header(R"("headers": {"X-A": "1\r\nBcc: v@x.example"})"), "headers.X-A: contains CR or LF"},
      {Header(R"("headers": {"X-A": "1\nBcc: v@x.example"})"), "headers.X-A: contains CR or LF"},
      {Header(R"("headers": {"X-A": "1\u0000"})"), "headers.X-A: contains NUL"},
      {Header(R"("headers": {"X-A": "1", "x-a": "2"})"), "headers.x-a: duplicate field"},
      {Header(R"("headers": {"X-A": ")" + std::string(995, 'v') + R"("})"),
       "headers.X-A: longer than 998 octets as a header line"},
      // return_path
      {Header(R"("return_path": "bounces")"), "return_path: invalid address"},
      {Header(R"("return_path": "b+{{id}}@{{dom}}")"), "return_path: invalid address"},
      {Header(R"("return_path": "b+{{id}} x@example.com")"), "return_path: invalid address"},
      // The literal parts must hold the '@' and the domain: a return path made of
      // recipient data alone is not trusted.
      {Header(R"("return_path": "{{to}}")"), "return_path: invalid address"},
      {Header(R"("return_path": "b+{{id@example.com")"), "return_path: unclosed {{"},
      {Header(R"("return_path": "b+{{}}@example.com")"), "return_path: empty placeholder"},
      {Header(R"("return_path": "b@example.com\r\nDATA")"), "return_path: contains CR or LF"},
      {Header(R"("return_path": 1)"), "return_path: must be a string"},
      // send_after, expires
      {Header(R"("send_after": "tomorrow")"),
       "send_after: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("send_after": "2024-05-01 09:00:00Z")"),
       "send_after: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("send_after": "2024-05-01T09:00:00")"),
       "send_after: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("send_after": "2024-5-1T09:00:00Z")"),
       "send_after: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("send_after": " 2024-05-01T09:00:00Z")"),
       "send_after: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": "2024-02-30T09:00:00Z")"),
       "expires: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": "2024-05-01T25:00:00Z")"),
       "expires: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": "2024")"),
       "expires: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": "2024-05-01T09:00:00+0200")"),
       "expires: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": "2024-05-01T09:00:00.Z")"),
       "expires: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": "")"),
       "expires: must be an RFC 3339 timestamp such as 2024-05-01T09:00:00Z"},
      {Header(R"("expires": 1714554000)"), "expires: must be a string"},
      {Header(R"("send_after": "2024-05-02T00:00:00Z", "expires": "2024-05-01T00:00:00Z")"),
       "expires: must be later than send_after"},
      {Header(R"("send_after": "2024-05-01T02:00:00+02:00", "expires": "2024-05-01T00:00:00Z")"),
       "expires: must be later than send_after"},
      // priority
      {Header(R"("priority": 10)"), "priority: must be an integer 0..9"},
      {Header(R"("priority": -1)"), "priority: must be an integer 0..9"},
      {Header(R"("priority": 5.0)"), "priority: must be an integer 0..9"},
      {Header(R"("priority": "5")"), "priority: must be an integer 0..9"},
      {Header(R"("priority": true)"), "priority: must be an integer 0..9"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<JobHeader> got = ParseJobHeader(c.line, kLimits);
    ASSERT_FALSE(got.ok()) << "line: " << c.line << "\nwant: " << c.want;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_EQ(ErrorOf(got.status()), c.want) << "line: " << c.line;
  }
}

TEST(ParseJobHeaderTest, Limits) {
  JobLimits small;
  small.max_header_line = 200;
  small.max_job_id = 4;
  small.max_header_fields = 2;
  const struct {
    std::string line;
    std::string want;
  } cases[] = {
      {Header(absl::StrCat(R"("headers": {"X-Pad": ")", std::string(100, 'p'), R"("})")),
       "line: 231 bytes, over 200"},
      {R"({"job": "abcde", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,4}"},
      {R"({"job": "a", "from": "a@example.com", "message": "S: x", )"
       R"("headers": {"A": "1", "B": "2", "C": "3"}})",
       "headers: more than 2 fields"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<JobHeader> got = ParseJobHeader(c.line, small);
    ASSERT_FALSE(got.ok()) << c.line;
    EXPECT_EQ(ErrorOf(got.status()), c.want) << "line: " << c.line;
  }
}

TEST(ParseJobHeaderTest, Minimal) {
  const absl::StatusOr<JobHeader> got = ParseJobHeader(Header(), kLimits);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, "spring-2024");
  EXPECT_EQ(got->from, "news@example.com");
  EXPECT_EQ(got->message, "Subject: Hi {{name}}\n\nHello {{name}}\n");
  EXPECT_TRUE(got->headers.empty());
  EXPECT_EQ(got->return_path, "");
  EXPECT_FALSE(got->send_after.has_value());
  EXPECT_FALSE(got->expires.has_value());
  EXPECT_EQ(got->priority, 5);
}

TEST(ParseJobHeaderTest, EveryOptionalField) {
  const std::string line =
      R"({"priority": 0, "expires": "2024-05-08T09:00:00.5+02:00", )"
      R"("headers": {"List-Unsubscribe": "<https://example.com/u>", "X-Campaign": "s24"}, )"
      R"("job": "s.24_b-1", "return_path": "bounce+{{ id }}@bounces.example.com", )"
      R"("from": "\"news desk\"@example.com", "send_after": "2024-05-01T09:00:00Z", )"
      R"("message": "From: News <news@example.com>\r\nSubject: {{subject}}\r\n\r\nHi\r\n"})";
  const absl::StatusOr<JobHeader> got = ParseJobHeader(line, kLimits);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->id, "s.24_b-1");
  EXPECT_EQ(got->from, "\"news desk\"@example.com");
  EXPECT_EQ(got->message,
            "From: News <news@example.com>\r\nSubject: {{subject}}\r\n\r\nHi\r\n");
  const Vars want_headers = {{"List-Unsubscribe", "<https://example.com/u>"},
                             {"X-Campaign", "s24"}};
  EXPECT_EQ(got->headers, want_headers);
  EXPECT_EQ(got->return_path, "bounce+{{ id }}@bounces.example.com");
  EXPECT_EQ(got->send_after, absl::FromUnixSeconds(1714554000));
  EXPECT_EQ(got->expires, absl::FromUnixSeconds(1715151600) + absl::Milliseconds(500));
  EXPECT_EQ(got->priority, 0);
}

TEST(ParseJobHeaderTest, AcceptedVariants) {
  const std::string cases[] = {
      Header(R"("priority": 9)"),
      Header(R"("return_path": "")"),
      Header(R"("headers": {})"),
      Header(R"("send_after": "2024-05-01t09:00:00z")"),
      Header(R"("expires": "2024-05-01T09:00:00-07:00")"),
      Header(R"("return_path": "{{a}}.{{b}}@{{c}}.example.com")"),
  };
  for (const auto& line : cases) {
    const absl::StatusOr<JobHeader> got = ParseJobHeader(line, kLimits);
    EXPECT_TRUE(got.ok()) << line << ": " << got.status();
  }
}

std::string Rcpt(const std::string& to, const std::string& vars = "") {
  std::string line = absl::StrCat(R"({"to": ")", to, R"(")");
  if (!vars.empty()) absl::StrAppend(&line, R"(, "vars": )", vars);
  return line + "}";
}

TEST(ParseRecipientLineTest, Errors) {
  const struct {
    std::string line;
    std::string want;
  } cases[] = {
      {"", "json: Empty: no JSON found"},
      {"not json", "json: line must be a JSON object"},
      {R"("a@example.com")", "json: line must be a JSON object"},
      {R"({"to": "a@example.com")", "json: JSON document ended early in the middle of an object or array."},
      {R"({"to": "a@example.com"}})", "json: trailing data after the object"},
      {R"({"to": "a@example.com",})",
       "json: The JSON document has an improper structure: missing or superfluous commas, "
       "braces, missing keys, etc."},
      {"{}", "to: missing"},
      {R"({"vars": {}})", "to: missing"},
      {R"({"to": 1})", "to: must be a string"},
      {R"({"to": ["a@example.com"]})", "to: must be a string"},
      {Rcpt("not-an-address"), "to: invalid address"},
      {Rcpt("a@localhost"), "to: invalid address"},
      {Rcpt(R"(a@example.com\r\nDATA)"), "to: contains CR or LF"},
      {Rcpt(R"(a@example.com\nRCPT TO:<b@example.com>)"), "to: contains CR or LF"},
      {Rcpt(R"(a@example.com\u0000)"), "to: contains NUL"},
      {R"({"to": "a@example.com", "to": "b@example.com"})", "to: duplicate field"},
      {R"({"to": "a@example.com", "cc": "b@example.com"})", "cc: unknown field"},
      {Rcpt("a@example.com", R"({}, "vars": {})"), "vars: duplicate field"},
      {Rcpt("a@example.com", "[]"), "vars: must be an object"},
      {Rcpt("a@example.com", "null"), "vars: must be an object"},
      {Rcpt("a@example.com", R"({"first": null})"),
       "vars.first: must be a string, number or boolean"},
      {Rcpt("a@example.com", R"({"first": {"a": 1}})"),
       "vars.first: must be a string, number or boolean"},
      {Rcpt("a@example.com", R"({"first": [1, 2]})"),
       "vars.first: must be a string, number or boolean"},
      {Rcpt("a@example.com", R"({"first_name": "Ann\r\nBcc: v@x.example"})"),
       "vars.first_name: contains CR or LF"},
      {Rcpt("a@example.com", R"({"first_name": "Ann\rX"})"), "vars.first_name: contains CR or LF"},
      {Rcpt("a@example.com", R"({"first_name": "Ann\nX"})"), "vars.first_name: contains CR or LF"},
      {Rcpt("a@example.com", R"({"first_name": "Ann\u0000"})"), "vars.first_name: contains NUL"},
      {Rcpt("a@example.com", R"({"first name": "Ann"})"),
       "vars.first name: invalid name (must match [A-Za-z0-9_.-]{1,64})"},
      {Rcpt("a@example.com", R"({"": "Ann"})"),
       "vars.: invalid name (must match [A-Za-z0-9_.-]{1,64})"},
      {Rcpt("a@example.com", R"({"a\r\nb": "Ann"})"),
       "vars.a??b: invalid name (must match [A-Za-z0-9_.-]{1,64})"},
      {Rcpt("a@example.com", R"({"x": 1, "x": 2})"), "vars.x: duplicate field"},
      {Rcpt("a@example.com", R"({"x": 01})"),
       "vars.x: invalid or out-of-range number (quote it as a string)"},
      {Rcpt("a@example.com", R"({"x": 1e999})"),
       "vars.x: invalid or out-of-range number (quote it as a string)"},
      {Rcpt("a@example.com", R"({"x": tru})"), "vars.x: invalid JSON (The JSON element does not have the requested type.)"},
      {Rcpt("a@example.com", R"({"x": "\ud800"})"),
       "vars.x: invalid JSON (Problem while parsing a string)"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Recipient> got = ParseRecipientLine(c.line, kLimits);
    ASSERT_FALSE(got.ok()) << "line: " << c.line << "\nwant: " << c.want;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument) << c.line;
    EXPECT_EQ(ErrorOf(got.status()), c.want) << "line: " << c.line;
  }
}

TEST(ParseRecipientLineTest, Limits) {
  JobLimits small;
  small.max_recipient_line = 120;
  small.max_vars = 2;
  small.max_var_name = 3;
  small.max_var_value = 5;
  small.max_address = 20;
  const struct {
    std::string line;
    std::string want;
  } cases[] = {
      {Rcpt("a@example.com", absl::StrCat(R"({"a": ")", std::string(100, 'v'), R"("})")),
       "line: 142 bytes, over 120"},
      {Rcpt("a@example.com", R"({"a": "1", "b": "2", "c": "3"})"), "vars: more than 2 variables"},
      {Rcpt("a@example.com", R"({"abcd": "1"})"),
       "vars.abcd: invalid name (must match [A-Za-z0-9_.-]{1,3})"},
      {Rcpt("a@example.com", R"({"a": "123456"})"), "vars.a: longer than 5 octets"},
      {Rcpt("a@example.com", R"({"a": 123456})"), "vars.a: longer than 5 octets"},
      {Rcpt("abcdefghij@example.com"), "to: invalid address"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Recipient> got = ParseRecipientLine(c.line, small);
    ASSERT_FALSE(got.ok()) << c.line;
    EXPECT_EQ(ErrorOf(got.status()), c.want) << "line: " << c.line;
  }
}

TEST(ParseRecipientLineTest, Accepts) {
  const struct {
    std::string line;
    Recipient want;
  } cases[] = {
      {Rcpt("a@example.com"), {"a@example.com", {}}},
      {R"(  {"vars": {}, "to": "a@example.com"}  )", {"a@example.com", {}}},
      {Rcpt("a@example.com", R"({"first": "Ann", "n": 3, "price": 1.50, "neg": -2e3,)"
                             R"( "vip": true, "off": false, "to": "Ann <a@example.com>"})"),
       {"a@example.com",
        {{"first", "Ann"}, {"n", "3"}, {"price", "1.50"}, {"neg", "-2e3"},
         {"vip", "true"}, {"off", "false"}, {"to", "Ann <a@example.com>"}}}},
      {Rcpt("j\u00f6rg@example.com", R"({"city": "K\u00f6ln", "tab": "a\tb"})"),
       {"j\xc3\xb6rg@example.com", {{"city", "K\xc3\xb6ln"}, {"tab", "a\tb"}}}},
      {Rcpt(R"(\"a b\"@example.com)"), {"\"a b\"@example.com", {}}},
      {Rcpt("a@example.com", R"({"big": 18446744073709551615})"),
       {"a@example.com", {{"big", "18446744073709551615"}}}},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Recipient> got = ParseRecipientLine(c.line, kLimits);
    ASSERT_TRUE(got.ok()) << c.line << ": " << got.status();
    EXPECT_EQ(got->to, c.want.to) << c.line;
    EXPECT_EQ(got->vars, c.want.vars) << c.line;
  }
}

TEST(ParseRecipientLineTest, ParserIsReusedAfterErrors) {
  // The per-thread parser must not carry state from a failed line into the next.
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(ParseRecipientLine(R"({"to": "a@example.com", "vars": {"x": [)", kLimits).ok());
    EXPECT_FALSE(ParseRecipientLine("{\"to\": \"a\xff\"}", kLimits).ok());
    const absl::StatusOr<Recipient> got = ParseRecipientLine(Rcpt("b@example.com"), kLimits);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->to, "b@example.com");
  }
}

TEST(IsValidAddressTest, Table) {
  const std::string local64(64, 'l');
  const std::string label63(63, 'd');
  const struct {
    std::string address;
    bool want;
  } cases[] = {
      // Valid.
      {"a@example.com", true},
      {"first.last@example.com", true},
      {"user+tag@sub.example.co.uk", true},
      {"!#$%&'*+-/=?^_`{|}~@example.com", true},
      {"\"john doe\"@example.com", true},
      {"\"a@b\"@example.com", true},
      {"\"quoted\\\"quote\"@example.com", true},
      {"\"<angle>\"@example.com", true},
      {"j\xc3\xb6rg@example.com", true},
      {"\xe7\x94\xa8\xe6\x88\xb7@example.com", true},
      {"a@xn--bcher-kva.example", true},
      {"a@1example.com", true},
      {"a@a-b.example", true},
      {"a@[192.0.2.1]", true},
      {"a@[IPv6:2001:db8::1]", true},
      {"a@[ipv6:::1]", true},
      {local64 + "@example.com", true},
      {"a@" + label63 + ".com", true},
      // Invalid.
      {"", false},
      {"example.com", false},
      {"@example.com", false},
      {"a@", false},
      {"a@localhost", false},
      {"a@@example.com", false},
      {"a@b@example.com", false},
      {".a@example.com", false},
      {"a.@example.com", false},
      {"a..b@example.com", false},
      {"a b@example.com", false},
      {"<a@example.com>", false},
      {"a>@example.com", false},
      {"a@example.com>", false},
      {"a@example.com\r\n", false},
      {"a\n@example.com", false},
      {std::string("a\0@example.com", 14), false},
      {"\"a\r\nb\"@example.com", false},
      {"\"a\\\r\"@example.com", false},
      {"\"\"@example.com", false},
      {"\"unclosed@example.com", false},
      {"\"a\"b@example.com", false},
      {"a\tb@example.com", false},
      {"a(comment)@example.com", false},
      {"a,b@example.com", false},
      {"a@-example.com", false},
      {"a@example-.com", false},
      {"a@exa_mple.com", false},
      {"a@example..com", false},
      {"a@.example.com", false},
      {"a@example.com.", false},
      {"a@" + std::string(64, 'd') + ".com", false},
      {"a@1.2.3.4", false},
      {"a@example.123", false},
      {"a@b\xc3\xbc" "cher.example", false},
      {"a@[256.0.0.1]", false},
      {"a@[1.2.3]", false},
      {"a@[01.2.3.4]", false},
      {"a@[IPv6:2001:db8::g]", false},
      {"a@[IPv6:1.2.3.4]", false},
      {"a@[example.com]", false},
      {"a@[192.0.2.1", false},
      {std::string(65, 'l') + "@example.com", false},
      {"\"" + std::string(63, 'q') + "\"@example.com", false},
      {"\xff@example.com", false},
      {"\xc0\xaf@example.com", false},  // overlong '/'
      {"\xed\xa0\x80@example.com", false},  // surrogate
      {"a@" + std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') +
           "." + std::string(57, 'd') + ".com",
       false},  // 255 octets
      {"ab@" + std::string(63, 'a') + "." + std::string(63, 'b') + "." + std::string(63, 'c') +
           "." + std::string(55, 'd') + ".com",
       true},  // 254 octets
  };
  for (const auto& c : cases) {
    EXPECT_EQ(IsValidAddress(c.address, kLimits), c.want) << "address: " << c.address;
  }
}

TEST(IsValidAddressTest, LimitsAreOptions) {
  JobLimits small;
  small.max_address = 12;
  small.max_local_part = 3;
  EXPECT_TRUE(IsValidAddress("abc@ex.co", small));
  EXPECT_FALSE(IsValidAddress("abcd@ex.co", small));
  EXPECT_FALSE(IsValidAddress("abc@example.co", small));
}

TEST(HeaderFieldNameTest, Table) {
  const struct {
    std::string name;
    bool want;
  } cases[] = {
      {"X-Campaign", true},   {"List-Unsubscribe", true}, {std::string(76, 'h'), true},
      {"!~", true},           {"", false},                {std::string(77, 'h'), false},
      {"X Campaign", false},  {"X:Campaign", false},      {"X-\r\nBcc", false},
      {"X-\x7f", false},      {"X-\xc3\xa9", false},      {"X-\t", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(IsValidHeaderFieldName(c.name), c.want) << "name: " << c.name;
  }
}

TEST(RecipientRecordTest, RoundTrip) {
  const Recipient cases[] = {
      {"a@example.com", {}},
      {"", {}},
      {"j\xc3\xb6rg@example.com", {{"first", "J\xc3\xb6rg"}, {"empty", ""}, {"n", "1.50"}}},
      {std::string(254, 'a'), {{std::string(64, 'k'), std::string(4096, 'v')}}},
      {"a@example.com", {{"t", std::string(200, 'x')}, {"u", std::string(20000, 'y')}}},
  };
  for (const auto& want : cases) {
    const std::string bytes = EncodeRecipient(want);
    EXPECT_EQ(bytes[0], '\x01');
    const absl::StatusOr<Recipient> got = DecodeRecipient(bytes);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->to, want.to);
    EXPECT_EQ(got->vars, want.vars);
  }
  // Small records stay small: version, two one-byte lengths, one var.
  EXPECT_EQ(EncodeRecipient({"a@b.co", {{"k", "v"}}}).size(), 1u + 1 + 6 + 1 + 1 + 1 + 1 + 1);
}

TEST(RecipientRecordTest, Corrupt) {
  const std::string good = EncodeRecipient({"a@example.com", {{"first", "Ann"}}});
  const struct {
    std::string bytes;
    std::string want;
  } cases[] = {
      {"", "recipient record: empty"},
      {"\x02" + good.substr(1), "recipient record: unknown version 2"},
      {std::string("\x00", 1) + good.substr(1), "recipient record: unknown version 0"},
      {good + "x", "recipient record: 1 trailing bytes"},
      {std::string("\x01\x05" "ab", 4), "recipient record: bad address"},
      {"\x01\xff\xff\xff\xff\xff\x01", "recipient record: bad address"},  // varint > 5 bytes
      {"\x01\xff\xff\xff\xff\x1f", "recipient record: bad address"},      // over 32 bits
      {std::string("\x01\x00\xff\xff\xff\xff\x0f", 7), "recipient record: bad variable count"},
      {std::string("\x01\x00\x01\x01", 4) + "k", "recipient record: bad variable 0"},
      {std::string("\x01\x03" "a\rb\x00", 5), "recipient record: bad address"},
      {std::string("\x01\x00\x01\x01" "k\x02" "\r\n", 8), "recipient record: bad variable 0"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Recipient> got = DecodeRecipient(c.bytes);
    ASSERT_FALSE(got.ok()) << "want: " << c.want;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(ErrorOf(got.status()), c.want);
  }
  // Every truncation of a good record is refused, never read past its end.
  for (size_t n = 0; n < good.size(); ++n) {
    EXPECT_FALSE(DecodeRecipient(good.substr(0, n)).ok()) << "prefix " << n;
  }
}

TEST(RenderMessageTest, HeadersThenTemplate) {
  const absl::StatusOr<JobHeader> h = ParseJobHeader(
      Header(R"("headers": {"X-Campaign": "s24", "List-Unsubscribe": "<mailto:u@example.com>"})"),
      kLimits);
  ASSERT_TRUE(h.ok()) << h.status();
  const absl::StatusOr<Template> t = Template::Compile(h->message);
  ASSERT_TRUE(t.ok()) << t.status();
  const struct {
    Recipient rcpt;
    std::string want;
  } cases[] = {
      {{"ann@example.com", {{"name", "Ann"}}},
       "Feedback-ID: spring-2024:example.com\r\n"
       "X-Campaign: s24\r\nList-Unsubscribe: <mailto:u@example.com>\r\n"
       "Subject: Hi Ann\r\n\r\nHello Ann\r\n"},
      {{"bob@example.com", {}},
       "Feedback-ID: spring-2024:example.com\r\n"
       "X-Campaign: s24\r\nList-Unsubscribe: <mailto:u@example.com>\r\n"
       "Subject: Hi \r\n\r\nHello \r\n"},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(RenderMessage(*h, *t, c.rcpt), c.want) << c.rcpt.to;
  }
}

TEST(RenderReturnPathTest, Table) {
  JobHeader h;
  h.from = "news@example.com";
  const struct {
    std::string return_path;
    Recipient rcpt;
    std::string want;
  } cases[] = {
      {"", {"a@example.com", {}}, "news@example.com"},
      {"bounces@example.com", {"a@example.com", {}}, "bounces@example.com"},
      {"b+{{id}}@example.com", {"a@example.com", {{"id", "42"}}}, "b+42@example.com"},
      {"b+{{ id }}@example.com", {"a@example.com", {}}, "b+@example.com"},
      // Values that would make MAIL FROM ambiguous fall back to `from`.
      {"b+{{id}}@example.com", {"a@example.com", {{"id", "x> SIZE=1"}}}, "news@example.com"},
      {"b+{{id}}@example.com", {"a@example.com", {{"id", "a@b"}}}, "news@example.com"},
      {"b+{{id}}@example.com", {"a@example.com", {{"id", std::string(70, 'x')}}},
       "news@example.com"},
      {"b+{{id}}@example.com", {"a@example.com", {{"id", "x\r\nRSET"}}}, "news@example.com"},
      {"b+{{id@example.com", {"a@example.com", {}}, "news@example.com"},
  };
  for (const auto& c : cases) {
    h.return_path = c.return_path;
    EXPECT_EQ(RenderReturnPath(h, c.rcpt), c.want) << "return_path: " << c.return_path;
  }
}

TEST(InjectionTest, EveryEntryPointRefusesLineBreaks) {
  // One table of attempts to smuggle a header or an SMTP command, each through a
  // different door; every one must fail with a message naming the door.
  const struct {
    bool header;  // ParseJobHeader, else ParseRecipientLine
    std::string line;
    std::string want;
  } cases[] = {
      {false, Rcpt("a@example.com", R"({"s": "x\r\nBcc: v@x.example"})"), "vars.s: contains CR or LF"},
      {false, Rcpt("a@example.com", R"({"s": "x\u000d\u000aBcc: v@x.example"})"),
       "vars.s: contains CR or LF"},
      {false, Rcpt(R"(a@example.com\r\nRCPT TO:<v@x.example>)"), "to: contains CR or LF"},
      {false, Rcpt(R"(\"a\r\nb\"@example.com)"), "to: contains CR or LF"},
      {true, Header(R"("headers": {"X-A": "1\r\nBcc: v@x.example"})"), "headers.X-A: contains CR or LF"},
      {true, Header(R"("headers": {"Bcc: v@x.example\r\nX-A": "1"})"),
       "headers.Bcc: v@x.example??X-A: invalid field name (1..76 printable ASCII, no ':' or space)"},
      {true, R"({"job": "a", "from": "a@example.com\r\nRSET", "message": "S: x"})",
       "from: contains CR or LF"},
      {true, Header(R"("return_path": "b+{{id}}@example.com\nRSET")"), "return_path: contains CR or LF"},
      {true, R"({"job": "a\r\n", "from": "a@example.com", "message": "S: x"})",
       "job: must match [A-Za-z0-9._-]{1,128}"},
      {true, R"({"job": "a", "from": "a@example.com", "message": "S: x\rBcc: v@x.example"})",
       "message: line 1: bare CR"},
  };
  for (const auto& c : cases) {
    const absl::Status got = c.header ? ParseJobHeader(c.line, kLimits).status()
                                      : ParseRecipientLine(c.line, kLimits).status();
    EXPECT_EQ(ErrorOf(got), c.want) << "line: " << c.line;
  }
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

// Issue 15: the job header fields a bulk sender needs, and what intake refuses.
TEST(BulkSenderFieldsTest, ParsedAndDefaulted) {
  absl::StatusOr<JobHeader> h = ParseJobHeader(Header(), kLimits);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->feedback_id, "spring-2024:example.com");
  EXPECT_TRUE(h->add_message_id);
  EXPECT_TRUE(h->add_date);
  EXPECT_TRUE(h->dkim);
  EXPECT_TRUE(h->unsubscribe_url.empty());

  h = ParseJobHeader(
      Header(R"("unsubscribe_url": "https://u.example.com/x/{{unsubscribe_token}}?n={{name}}", )"
             R"("unsubscribe_mailto": "unsub@example.com", "list_id": "News <news.example.com>", )"
             R"("feedback_id": "", "add_message_id": false, "add_date": false, "dkim": false)"),
      kLimits);
  ASSERT_TRUE(h.ok()) << h.status();
  EXPECT_EQ(h->unsubscribe_url, "https://u.example.com/x/{{unsubscribe_token}}?n={{name}}");
  EXPECT_EQ(h->unsubscribe_mailto, "unsub@example.com");
  EXPECT_EQ(h->list_id, "News <news.example.com>");
  EXPECT_EQ(h->feedback_id, "");
  EXPECT_FALSE(h->add_message_id);
  EXPECT_FALSE(h->add_date);
  EXPECT_FALSE(h->dkim);
}

TEST(BulkSenderFieldsTest, Errors) {
  const struct {
    std::string extra;
    std::string want;
  } cases[] = {
      {R"("unsubscribe_url": "http://u.example.com/x")", "unsubscribe_url: must start with https://"},
      {R"("unsubscribe_url": "https://{{host}}/x")",
       "unsubscribe_url: the host must be written out"},
      {R"("unsubscribe_url": "https://evil@u.example.com/x")",
       "unsubscribe_url: the host must be written out"},
      {R"("unsubscribe_url": "https://u.example.com/x y")", "unsubscribe_url: holds a space"},
      {R"("unsubscribe_url": "https://u.example.com/x>")", "unsubscribe_url: holds a space"},
      {R"("unsubscribe_url": "https://u.example.com/{{x")", "unsubscribe_url: unclosed {{"},
      {R"("unsubscribe_url": "https://u.example.com/\r\nBcc: a@b.example")",
       "unsubscribe_url: contains CR or LF"},
      {R"("unsubscribe_mailto": "u@example.com")",
       "unsubscribe_mailto: needs unsubscribe_url too"},
      {R"("unsubscribe_url": "https://u.example.com/", "unsubscribe_mailto": "u@example.com?cc=x@y.example")",
       "unsubscribe_mailto: invalid address"},
      {R"("list_id": "news")", "list_id: the list label must be a dot-atom"},
      {R"("list_id": "News <news.example.com> x")", "list_id: must be \"label.domain\""},
      {R"("list_id": "news.example.com\nBcc: a@b.example")", "list_id: contains CR or LF"},
      {R"("feedback_id": "a b")", "feedback_id: must be printable ASCII without spaces"},
      {R"("feedback_id": "a\u0000b")", "feedback_id: contains NUL"},
      {R"("add_date": "no")", "add_date: must be true or false"},
      {R"("dkim": 0)", "dkim: must be true or false"},
  };
  for (const auto& c : cases) {
    const absl::Status got = ParseJobHeader(Header(c.extra), kLimits).status();
    EXPECT_THAT(ErrorOf(got), ::testing::StartsWith(c.want)) << c.extra;
  }
}

TEST(BulkSenderFieldsTest, RenderAddsFieldsFirst) {
  const absl::StatusOr<JobHeader> h = ParseJobHeader(
      Header(R"("unsubscribe_url": "https://u.example.com/x/{{unsubscribe_token}}?n={{name}}", )"
             R"("unsubscribe_mailto": "unsub@example.com", "list_id": "news.example.com", )"
             R"("headers": {"X-Campaign": "s24"})"),
      kLimits);
  ASSERT_TRUE(h.ok()) << h.status();
  const absl::StatusOr<Template> t = Template::Compile(h->message);
  ASSERT_TRUE(t.ok()) << t.status();
  AddedFields added;
  added.message_id = "spring-2024.7.abc@example.com";
  added.date = "Sun, 06 Dec 2026 07:52:29 +0000";
  added.unsubscribe_token = "tok3n";
  // A value with URL syntax in it is percent-encoded: it cannot end the <...> early.
  const Recipient r{"ann@example.com", {{"name", "Ann & <Bo>"}}};
  EXPECT_EQ(RenderMessage(*h, *t, r, added),
            "Message-ID: <spring-2024.7.abc@example.com>\r\n"
            "Date: Sun, 06 Dec 2026 07:52:29 +0000\r\n"
            "List-Unsubscribe: <https://u.example.com/x/tok3n?n=Ann%20%26%20%3CBo%3E>,\r\n"
            " <mailto:unsub@example.com?subject=unsubscribe>\r\n"
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
            "List-Id: <news.example.com>\r\n"
            "Feedback-ID: spring-2024:example.com\r\n"
            "X-Campaign: s24\r\n"
            "Subject: Hi Ann & <Bo>\r\n\r\nHello Ann & <Bo>\r\n");
  // Nothing added when nothing is asked for: the template as written.
  JobHeader bare = *h;
  bare.unsubscribe_url.clear();
  bare.unsubscribe_mailto.clear();
  bare.list_id.clear();
  bare.feedback_id.clear();
  bare.headers.clear();
  EXPECT_EQ(RenderMessage(bare, *t, r, AddedFields{}),
            "Subject: Hi Ann & <Bo>\r\n\r\nHello Ann & <Bo>\r\n");
}

TEST(BulkSenderFieldsTest, UnsubscribeUrlLengthIsCheckedAfterEncoding) {
  const absl::StatusOr<JobHeader> h =
      ParseJobHeader(Header(R"("unsubscribe_url": "https://u.example.com/?n={{name}}")"), kLimits);
  ASSERT_TRUE(h.ok()) << h.status();
  std::string url;
  EXPECT_TRUE(RenderUnsubscribeUrl(*h, {"a@example.com", {{"name", "x"}}}, "", &url));
  EXPECT_EQ(url, "https://u.example.com/?n=x");
  // 300 spaces are 900 octets encoded: over kMaxUnsubscribeUrl with the rest.
  EXPECT_FALSE(RenderUnsubscribeUrl(*h, {"a@example.com", {{"name", std::string(300, ' ')}}}, "",
                                    &url));
}

TEST(CheckMessageHeadersTest, RefusesWhatWouldRepeatOrDouble) {
  const struct {
    std::string extra;
    std::string message;
    std::string want;  // empty: accepted
  } cases[] = {
      {"", "Subject: x\n\nbody\n", ""},
      {"", "Message-ID: <{{id}}@example.com>\nSubject: x\n\nbody\n", ""},
      {"", "Message-ID: <same@example.com>\nSubject: x\n\nbody\n",
       "message: its Message-ID field has no placeholder"},
      {"", "message-id: <same@example.com>\nSubject: x\n\nbody\n",
       "message: its Message-ID field has no placeholder"},
      {R"("headers": {"Message-Id": "<a@example.com>"})", "Subject: x\n\nbody\n",
       "headers.Message-ID: would be the same in every message"},
      {R"("unsubscribe_url": "https://u.example.com/")",
       "List-Unsubscribe: <mailto:x@example.com>\nSubject: x\n\nbody\n",
       "unsubscribe_url: the message has a list-unsubscribe field of its own"},
      {R"("list_id": "a.example.com")", "List-Id: <b.example.com>\nSubject: x\n\nbody\n",
       "list_id: the message has a List-Id field of its own"},
      // The default Feedback-ID gives way to the message's own; an explicit one
      // beside it is a mistake.
      {"", "Feedback-ID: a:b\nSubject: x\n\nbody\n", ""},
      {R"("headers": {"feedback-id": "a:b"})", "Subject: x\n\nbody\n", ""},
      {R"("feedback_id": "c:d")", "Feedback-ID: a:b\nSubject: x\n\nbody\n",
       "feedback_id: the message has a Feedback-ID field of its own"},
      {R"("feedback_id": "")", "Feedback-ID: a:b\nSubject: x\n\nbody\n", ""},
  };
  for (const auto& c : cases) {
    std::string line = R"({"job": "j1", "from": "news@example.com", "message": )";
    std::string escaped;
    for (char ch : c.message) {
      if (ch == '\n') {
        escaped += "\\n";
      } else {
        escaped += ch;
      }
    }
    absl::StrAppend(&line, "\"", escaped, "\"");
    if (!c.extra.empty()) absl::StrAppend(&line, ", ", c.extra);
    line += "}";
    const absl::StatusOr<JobHeader> h = ParseJobHeader(line, kLimits);
    ASSERT_TRUE(h.ok()) << h.status() << " " << line;
    const absl::StatusOr<Template> t = Template::Compile(h->message);
    ASSERT_TRUE(t.ok()) << t.status();
    const absl::Status got = CheckMessageHeaders(*h, *t);
    if (c.want.empty()) {
      EXPECT_TRUE(got.ok()) << got << " " << line;
    } else {
      EXPECT_THAT(ErrorOf(got), ::testing::StartsWith(c.want)) << line;
    }
  }
}

TEST(CheckMessageHeadersTest, TokenUse) {
  const absl::StatusOr<JobHeader> plain = ParseJobHeader(Header(), kLimits);
  ASSERT_TRUE(plain.ok());
  const absl::StatusOr<Template> t = Template::Compile(plain->message);
  ASSERT_TRUE(t.ok());
  EXPECT_FALSE(UsesUnsubscribeToken(*plain, *t));
  const absl::StatusOr<JobHeader> in_url = ParseJobHeader(
      Header(R"("unsubscribe_url": "https://u.example.com/{{ unsubscribe_token }}")"), kLimits);
  ASSERT_TRUE(in_url.ok());
  EXPECT_TRUE(UsesUnsubscribeToken(*in_url, *t));
  // The words alone are not a placeholder.
  const absl::StatusOr<JobHeader> words = ParseJobHeader(
      Header(R"("unsubscribe_url": "https://u.example.com/unsubscribe_token")"), kLimits);
  ASSERT_TRUE(words.ok());
  EXPECT_FALSE(UsesUnsubscribeToken(*words, *t));
  const absl::StatusOr<Template> body = Template::Compile("Subject: x\n\nu/{{unsubscribe_token}}\n");
  ASSERT_TRUE(body.ok());
  EXPECT_TRUE(UsesUnsubscribeToken(*plain, *body));
}

}  // namespace
}  // namespace volley::queue
