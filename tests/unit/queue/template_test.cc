// template_test.cc - Template::Compile errors, rendering, inline templates.
#include "queue/template.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "queue/job.h"

namespace volley::queue {
namespace {

std::string Repeat(char c, size_t n) { return std::string(n, c); }

TEST(TemplateCompileTest, Errors) {
  const std::string long_line = "Subject: x\n\n1\n2\n3\n4\n" + Repeat('a', 1203) + "\n";
  const struct {
    std::string text;
    std::string want;
  } cases[] = {
      {"", "line 1: header section must start with a 'Name: value' field"},
      {"\nbody\n", "line 1: header section must start with a 'Name: value' field"},
      {" folded: x\n", "line 1: header section must start with a 'Name: value' field"},
      {"just text\n\nbody", "line 1: header section must start with a 'Name: value' field"},
      {"Subject: hi\nno colon\n\nbody", "line 2: not a header field (no ':')"},
      {"Subject: {{ name\n\nbody", "line 1: unclosed {{"},
      {"Subject: {{na\nme}}\n", "line 1: unclosed {{"},
      {"Subject: x\n\nHello {{}}\n", "line 3: empty placeholder"},
      {"Subject: x\n\nHello {{  \t }}\n", "line 3: empty placeholder"},
      {"Subject: x\n\nHello {{first name}}\n", "line 3: invalid placeholder name"},
      {"Subject: x\n\nHello {{{x}}}\n", "line 3: invalid placeholder name"},
      {"Subject: x\n\n{{" + Repeat('n', 65) + "}}\n", "line 3: invalid placeholder name"},
      {"{{hdr}}: x\n\nbody", "line 1: placeholder in header field name"},
      {"X-{{hdr}}: x\n\nbody", "line 1: placeholder in header field name"},
      {"Bad Name: x\n\nbody", "line 1: invalid header field name"},
      {": x\n\nbody", "line 1: invalid header field name"},
      {"Subject: x\r\n\r\nline\rmore\r\n", "line 3: bare CR"},
      {"Subject: x\rBcc: a@b.example\n\nbody", "line 1: bare CR"},
      {std::string("Subject: x\n\nnul\0here\n", 22), "line 3: contains NUL"},
      {long_line, "line 7 is 1203 octets, over 998"},
      {"Subject: x\n\n" + Repeat('b', 999), "line 3 is 999 octets, over 998"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Template> got = Template::Compile(c.text);
    ASSERT_FALSE(got.ok()) << "text: " << c.text.substr(0, 60) << "\nwant: " << c.want;
    EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(std::string(got.status().message()), c.want) << "text: " << c.text.substr(0, 60);
  }
}

TEST(TemplateCompileTest, Accepts) {
  const struct {
    std::string text;
    std::vector<std::string> want_vars;
  } cases[] = {
      {"Subject: hi", {}},
      {"Subject: hi\n", {}},
      {"Subject: hi\n\n", {}},
      {"Subject: {{subj}}\n folded {{ a }}\n\n{{a}} {{\tb\t}} {{to}}\n", {"subj", "a", "b", "to"}},
      {"Subject: x\n\n" + Repeat('b', 998) + "\n", {}},
      {"Subject: x\r\n\r\n}} and { alone\r\n", {}},
      {"X-A.b_c-9: {{A.b_c-9}}\n\n", {"A.b_c-9"}},
      {"Subject: x\n\n{{" + Repeat('n', 64) + "}}", {Repeat('n', 64)}},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Template> got = Template::Compile(c.text);
    ASSERT_TRUE(got.ok()) << "text: " << c.text.substr(0, 60) << ": " << got.status();
    EXPECT_EQ(got->variables(), c.want_vars) << "text: " << c.text.substr(0, 60);
  }
}

TEST(TemplateRenderTest, Render) {
  const Recipient ann{"ann@example.com", {{"first", "Ann"}, {"n", "3"}}};
  const struct {
    std::string text;
    Recipient rcpt;
    std::string want;
  } cases[] = {
      {"Subject: Hi {{first}}\n\nDear {{ first }},\n",
       ann, "Subject: Hi Ann\r\n\r\nDear Ann,\r\n"},
      {"Subject: x\n\nMissing: [{{last}}]\n", ann, "Subject: x\r\n\r\nMissing: []\r\n"},
      {"To: {{to}}\n\n{{to}}", ann, "To: ann@example.com\r\n\r\nann@example.com\r\n"},
      {"To: {{to}}\n", Recipient{"a@example.com", {{"to", "Override <o@example.com>"}}},
       "To: Override <o@example.com>\r\n"},
      {"Subject: {{first}}{{first}}{{n}}\n", ann, "Subject: AnnAnn3\r\n"},
      {"Subject: x\r\n\r\nCRLF kept\r\n", ann, "Subject: x\r\n\r\nCRLF kept\r\n"},
      {"Subject: x\n\n}} {single} {{first}}}}", ann, "Subject: x\r\n\r\n}} {single} Ann}}\r\n"},
      // A value is inserted verbatim, never expanded a second time.
      {"Subject: {{v}}\n", Recipient{"a@example.com", {{"v", "{{first}}"}, {"first", "X"}}},
       "Subject: {{first}}\r\n"},
      {"Subject: {{v}}\n", Recipient{"a@example.com", {}}, "Subject: \r\n"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Template> t = Template::Compile(c.text);
    ASSERT_TRUE(t.ok()) << t.status();
    std::string got;
    t->Render(c.rcpt, &got);
    EXPECT_EQ(got, c.want) << "text: " << c.text;
  }
}

TEST(TemplateRenderTest, AppendsWithoutClearing) {
  const absl::StatusOr<Template> t = Template::Compile("Subject: {{a}}\n");
  ASSERT_TRUE(t.ok());
  std::string got = "X-Pre: 1\r\n";
  t->Render(Recipient{"a@example.com", {{"a", "b"}}}, &got);
  EXPECT_EQ(got, "X-Pre: 1\r\nSubject: b\r\n");
}

TEST(TemplateRenderTest, ManyVariables) {
  // More distinct variables than Render keeps on the stack.
  std::string text = "Subject: x\n\n";
  std::string want = "Subject: x\r\n\r\n";
  Recipient r{"a@example.com", {}};
  for (int i = 0; i < 40; ++i) {
    const std::string name = "v" + std::to_string(i);
    text += "{{" + name + "}},";
    if (i % 2 == 0) {
      r.vars.emplace_back(name, std::to_string(i * 10));
      want += std::to_string(i * 10);
    }
    want += ",";
  }
  want += "\r\n";
  const absl::StatusOr<Template> t = Template::Compile(text);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->variables().size(), 40u);
  std::string got;
  t->Render(r, &got);
  EXPECT_EQ(got, want);
}

TEST(TemplateRenderTest, CopiedTemplateRendersTheSame) {
  absl::StatusOr<Template> t = Template::Compile("Subject: {{a}}\n\nbody {{a}}\n");
  ASSERT_TRUE(t.ok());
  const Template copy = *t;
  const Template moved = std::move(*t);
  const Recipient r{"a@example.com", {{"a", "1"}}};
  std::string got_copy;
  std::string got_moved;
  copy.Render(r, &got_copy);
  moved.Render(r, &got_moved);
  EXPECT_EQ(got_copy, "Subject: 1\r\n\r\nbody 1\r\n");
  EXPECT_EQ(got_moved, got_copy);
}

// LongestRenderedLine - the longest line of a rendered message, measured the slow
// way: {line from 1, octets without CRLF}; the earliest wins a tie.
std::pair<size_t, size_t> LongestRenderedLine(std::string_view message) {
  std::pair<size_t, size_t> best{0, 0};
  size_t line = 0;
  for (size_t pos = 0; pos < message.size();) {
    size_t end = message.find("\r\n", pos);
    if (end == std::string_view::npos) end = message.size();
    ++line;
    if (best.first == 0 || end - pos > best.second) best = {line, end - pos};
    pos = end + 2;
  }
  return best;
}

TEST(TemplateLineLengthTest, LongestLineAndCheck) {
  // "X: " and 980 octets of padding leave 15 octets for {{to}} within 998.
  const std::string to_line = "X: " + Repeat('p', 980) + "{{to}}\n";
  std::string utf8_998;  // 499 two-octet characters: 998 octets, 499 characters
  std::string utf8_1000;
  for (int i = 0; i < 499; ++i) utf8_998 += "\xc3\xa9";
  utf8_1000 = utf8_998 + "\xc3\xa9";
  const struct {
    std::string name;
    std::string text;
    Recipient rcpt;
    size_t want_line;
    size_t want_length;
    std::string want_var;
    std::string want_error;  // empty: CheckLineLength is OK
  } cases[] = {
      // A value in a header line: "Subject: " is 9 octets.
      {"header line at 998", "Subject: {{v}}\n\nbody\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 989)}}}, 1, 998, "v", ""},
      {"header line at 999", "Subject: {{v}}\n\nbody\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 990)}}}, 1, 999, "v",
       "vars.v: renders message line 1 at 999 octets, over 998"},
      // A value in a body line: "Hello " and "!" are 7 octets.
      {"body line at 998", "Subject: x\n\nHello {{ v }}!\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 991)}}}, 3, 998, "v", ""},
      {"body line at 999", "Subject: x\r\n\r\nHello {{ v }}!\r\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 992)}}}, 3, 999, "v",
       "vars.v: renders message line 3 at 999 octets, over 998"},
      {"body line far over", "Subject: x\n\n1\n2\nHello {{v}}\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 1197)}}}, 5, 1203, "v",
       "vars.v: renders message line 5 at 1203 octets, over 998"},
      // Octets, not characters.
      {"utf-8 at 998 octets", "Subject: x\n\n{{v}}\n", Recipient{"a@example.com", {{"v", utf8_998}}},
       3, 998, "v", ""},
      {"utf-8 at 1000 octets", "Subject: x\n\n{{v}}\n",
       Recipient{"a@example.com", {{"v", utf8_1000}}}, 3, 1000, "v",
       "vars.v: renders message line 3 at 1000 octets, over 998"},
      // The builtin {{to}}, and a "to" variable overriding it.
      {"to at 998", "Subject: x\n" + to_line, Recipient{"ann@example.com", {}}, 2, 998, "to", ""},
      {"to at 999", "Subject: x\n" + to_line, Recipient{"anne@example.com", {}}, 2, 999, "to",
       "to: renders message line 2 at 999 octets, over 998"},
      {"vars.to over 998", "Subject: x\n" + to_line,
       Recipient{"a@example.com", {{"to", "Anne <anne@example.com>"}}}, 2, 1006, "to",
       "vars.to: renders message line 2 at 1006 octets, over 998"},
      // Several placeholders on one line: "--" is the literal. The field named is
      // the variable adding the most octets, all its placeholders counted.
      {"several at 998", "Subject: x\n\n{{a}}-{{b}}-{{a}}\n",
       Recipient{"a@example.com", {{"a", Repeat('a', 300)}, {"b", Repeat('b', 396)}}}, 3, 998, "a",
       ""},
      {"several at 999, repeated var most", "Subject: x\n\n{{a}}-{{b}}-{{a}}\n",
       Recipient{"a@example.com", {{"a", Repeat('a', 300)}, {"b", Repeat('b', 397)}}}, 3, 999, "a",
       "vars.a: renders message line 3 at 999 octets, over 998"},
      {"several at 999, single var most", "Subject: x\n\n{{a}}-{{b}}-{{a}}\n",
       Recipient{"a@example.com", {{"a", Repeat('a', 100)}, {"b", Repeat('b', 797)}}}, 3, 999, "b",
       "vars.b: renders message line 3 at 999 octets, over 998"},
      {"several with to", "Subject: x\n\n{{to}} {{first}} {{to}}\n",
       Recipient{"anne@example.com", {{"first", Repeat('f', 966)}}}, 3, 1000, "first",
       "vars.first: renders message line 3 at 1000 octets, over 998"},
      // The longest line wins, wherever it is; an undefined variable is empty.
      {"longest of several lines", "Subject: {{v}}\n\n{{v}}{{v}}\n{{missing}}\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 500)}}}, 3, 1000, "v",
       "vars.v: renders message line 3 at 1000 octets, over 998"},
      {"literal line longer than rendered ones", "Subject: {{v}}\n\n" + Repeat('b', 998) + "\n",
       Recipient{"a@example.com", {{"v", "short"}}}, 3, 998, "", ""},
      {"tie goes to the earlier line", "Subject: {{v}}\n\n" + Repeat('b', 14) + "\n",
       Recipient{"a@example.com", {{"v", "short"}}}, 1, 14, "v", ""},
      {"tie goes to the earlier line, literal first", "Subject: xxxxx\n\n{{v}}" + Repeat('b', 9) + "\n",
       Recipient{"a@example.com", {{"v", "short"}}}, 1, 14, "", ""},
      // A template without placeholders: checked by Compile, the same for everyone.
      {"no placeholders", "Subject: x\n\n" + Repeat('b', 998) + "\nend\n",
       Recipient{"a@example.com", {{"v", Repeat('v', 4096)}}}, 3, 998, "", ""},
      {"empty lines only", "Subject: {{v}}\n\n", Recipient{"a@example.com", {}}, 1, 9, "v", ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const absl::StatusOr<Template> t = Template::Compile(c.text);
    ASSERT_TRUE(t.ok()) << t.status();
    const RenderedLine got = t->LongestLine(c.rcpt);
    EXPECT_EQ(got.line, c.want_line);
    EXPECT_EQ(got.length, c.want_length);
    EXPECT_EQ(std::string(got.var), c.want_var);
    // The cheap count agrees with the rendered message.
    std::string rendered;
    t->Render(c.rcpt, &rendered);
    EXPECT_EQ(LongestRenderedLine(rendered), std::make_pair(got.line, got.length));
    const absl::Status st = t->CheckLineLength(c.rcpt);
    EXPECT_EQ(std::string(st.message()), c.want_error);
    if (!c.want_error.empty()) {
      EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
    }
  }
}

TEST(TemplateLineLengthTest, HasPlaceholders) {
  EXPECT_FALSE(Template::Compile("Subject: x\n\nbody\n")->has_placeholders());
  EXPECT_TRUE(Template::Compile("Subject: x\n\n{{to}}\n")->has_placeholders());
}

TEST(TemplateLineLengthTest, ManyVariablesOnOneLine) {
  // More distinct variables than LongestLine keeps on the stack, on one line.
  std::string text = "Subject: x\n\n";
  Recipient r{"a@example.com", {}};
  for (int i = 0; i < 40; ++i) {
    // Appended rather than "v" + ...: GCC 12 -O3 warns on that (bug 105329).
    std::string name = "v";
    name += std::to_string(i);
    text += "{{" + name + "}}";
    r.vars.emplace_back(name, Repeat('x', 25));
  }
  const absl::StatusOr<Template> t = Template::Compile(text);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->LongestLine(r).length, 1000u);
  EXPECT_EQ(std::string(t->CheckLineLength(r).message()),
            "vars.v0: renders message line 3 at 1000 octets, over 998");
  r.vars.back().second = Repeat('x', 23);
  EXPECT_TRUE(t->CheckLineLength(r).ok());
}

TEST(TemplateLineLengthTest, LineBreakInAHandBuiltValueOnlyOverestimates) {
  // The parser never lets CR or LF into a value; were one there, it is counted
  // whole rather than splitting the line, so the check errs on the safe side.
  const absl::StatusOr<Template> t = Template::Compile("Subject: x\n\n{{v}}\n");
  ASSERT_TRUE(t.ok());
  const Recipient r{"a@example.com", {{"v", Repeat('a', 600) + "\r\n" + Repeat('b', 600)}}};
  EXPECT_EQ(t->LongestLine(r).length, 1202u);
  EXPECT_FALSE(t->CheckLineLength(r).ok());
}

TEST(InlineTemplateTest, Check) {
  const struct {
    std::string text;
    std::string want;  // empty: OK
  } cases[] = {
      {"bounce@example.com", ""},
      {"bounce+{{id}}@example.com", ""},
      {"b+{{ id }}-{{to}}@example.com", ""},
      {"b+{{id@example.com", "unclosed {{"},
      {"b+{{}}@example.com", "empty placeholder"},
      {"b+{{a b}}@example.com", "invalid placeholder name"},
      {"b+{{id}}@example.com\r\nRCPT TO:<x@y.z>", "contains CR, LF or NUL"},
      {std::string("b\0@example.com", 14), "contains CR, LF or NUL"},
  };
  for (const auto& c : cases) {
    const absl::Status got = CheckInlineTemplate(c.text);
    EXPECT_EQ(std::string(got.message()), c.want) << "text: " << c.text;
  }
}

TEST(InlineTemplateTest, Render) {
  const Recipient r{"ann@example.com", {{"id", "42"}}};
  const struct {
    std::string text;
    bool want_ok;
    std::string want;
  } cases[] = {
      {"plain@example.com", true, "plain@example.com"},
      {"b+{{id}}@example.com", true, "b+42@example.com"},
      {"b+{{ id }}.{{missing}}@example.com", true, "b+42.@example.com"},
      {"{{to}}", true, "ann@example.com"},
      {"b+{{id@example.com", false, ""},
  };
  for (const auto& c : cases) {
    std::string got;
    const bool ok = AppendRenderedInline(c.text, r, &got);
    EXPECT_EQ(ok, c.want_ok) << "text: " << c.text;
    if (ok) {
      EXPECT_EQ(got, c.want) << "text: " << c.text;
    }
  }
}

TEST(PlaceholderNameTest, Names) {
  EXPECT_TRUE(IsPlaceholderName("a"));
  EXPECT_TRUE(IsPlaceholderName("A.b_c-9"));
  EXPECT_TRUE(IsPlaceholderName(Repeat('x', 64)));
  EXPECT_FALSE(IsPlaceholderName(Repeat('x', 65)));
  EXPECT_FALSE(IsPlaceholderName(""));
  EXPECT_FALSE(IsPlaceholderName("a b"));
  EXPECT_FALSE(IsPlaceholderName("a:b"));
  EXPECT_FALSE(IsPlaceholderName("\xc3\xa9"));
  EXPECT_FALSE(IsPlaceholderName("abc", 2));
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

TEST(TemplateBuiltinsTest, UnsubscribeTokenIsTheBuiltinsWhateverTheVarsSay) {
  const absl::StatusOr<Template> t =
      Template::Compile("Subject: {{to}}\n\nu/{{unsubscribe_token}} {{ unsubscribe_token }}\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_TRUE(t->uses("unsubscribe_token"));
  EXPECT_FALSE(t->uses("first"));
  // A recipient line cannot choose its own token.
  const Recipient r{"a@example.com", {{"unsubscribe_token", "forged"}}};
  Builtins b;
  b.unsubscribe_token = "real";
  std::string out;
  t->Render(r, b, &out);
  EXPECT_EQ(out, "Subject: a@example.com\r\n\r\nu/real real\r\n");
  out.clear();
  t->Render(r, &out);  // no token: renders empty, never the var
  EXPECT_EQ(out, "Subject: a@example.com\r\n\r\nu/ \r\n");
}

TEST(TemplateBuiltinsTest, LineLengthCountsTheToken) {
  const std::string literal(998 - 30, 'x');
  const absl::StatusOr<Template> t =
      Template::Compile("Subject: s\n\n" + literal + "{{unsubscribe_token}}\n");
  ASSERT_TRUE(t.ok()) << t.status();
  const Recipient r{"a@example.com", {}};
  EXPECT_TRUE(t->CheckLineLength(r).ok());
  const std::string token(kMaxUnsubscribeToken, 't');
  Builtins b;
  b.unsubscribe_token = token;
  const absl::Status st = t->CheckLineLength(r, b);
  EXPECT_FALSE(st.ok());
  EXPECT_NE(std::string(st.message()).find("unsubscribe_token"), std::string::npos) << st;
}

TEST(TemplateFieldsTest, HeaderFieldsAndBodyPlaceholders) {
  const absl::StatusOr<Template> t = Template::Compile(
      "From: News <n@example.com>\nTo: {{to}}\nSubject: long\n  and {{first}}\nMessage-ID: "
      "<{{id}}@example.com>\n\nThe same body for all.\n");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->header_fields().size(), 4u);
  EXPECT_EQ(t->header_fields()[0].name, "from");
  EXPECT_FALSE(t->header_fields()[0].has_placeholders);
  EXPECT_TRUE(t->FindHeader("to")->has_placeholders);
  // A placeholder on a continuation line belongs to its field.
  EXPECT_TRUE(t->FindHeader("subject")->has_placeholders);
  EXPECT_TRUE(t->FindHeader("message-id")->has_placeholders);
  EXPECT_EQ(t->FindHeader("date"), nullptr);
  EXPECT_FALSE(t->body_has_placeholders());

  const absl::StatusOr<Template> personal = Template::Compile("Subject: s\n\nHi {{first}}\n");
  ASSERT_TRUE(personal.ok());
  EXPECT_TRUE(personal->body_has_placeholders());
  EXPECT_FALSE(personal->FindHeader("subject")->has_placeholders);
}

TEST(InlineTemplateTest, PercentEncodedValues) {
  const Recipient r{"a b@example.com", {{"q", "x&y=<z>/~._-"}}};
  std::string out;
  ASSERT_TRUE(AppendRenderedInline("https://h.example/{{q}}?to={{to}}&t={{unsubscribe_token}}", r,
                                   Builtins{"tok"}, InlineValues::kPercentEncoded, &out));
  EXPECT_EQ(out, "https://h.example/x%26y%3D%3Cz%3E%2F~._-?to=a%20b%40example.com&t=tok");
  EXPECT_TRUE(InlineTemplateUses("a{{ q }}b", "q"));
  EXPECT_FALSE(InlineTemplateUses("a{{qq}}b q", "q"));
}

}  // namespace
}  // namespace volley::queue

namespace volley::queue {
namespace {

// Defaults ({{name|default}}): grammar, escapes, bounds, rendering, line lengths.
TEST(TemplateDefaultTest, CompileErrors) {
  const struct {
    std::string text;
    std::string want;
  } cases[] = {
      {"Subject: x\n\nHi {{name|there\n", "line 3: unclosed {{"},
      {"Subject: x\n\nHi {{name|there\\}}\n", "line 3: unclosed {{"},
      {"Subject: x\n\nHi {{name|\\", "line 3: unclosed {{"},
      {"Subject: x\n\nHi {{|there}}\n", "line 3: empty placeholder"},
      {"Subject: x\n\nHi {{first name|there}}\n", "line 3: invalid placeholder name"},
      {"Subject: x\n\nHi {{name|a {{b}} c}}\n", "line 3: \"{{\" inside a default (write \\{)"},
      {"Subject: x\n\nHi {{name|" + std::string(257, 'd') + "}}\n",
       "line 3: default longer than 256 octets"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<Template> got = Template::Compile(c.text);
    ASSERT_FALSE(got.ok()) << "text: " << c.text.substr(0, 60);
    EXPECT_EQ(std::string(got.status().message()), c.want) << "text: " << c.text.substr(0, 60);
  }
  EXPECT_TRUE(Template::Compile("Subject: x\n\n{{n|" + std::string(256, 'd') + "}}\n").ok());
}

TEST(TemplateDefaultTest, Render) {
  const Recipient ann{"ann@example.com", {{"first", "Ann"}, {"empty", ""}}};
  const Recipient bob{"bob@example.com", {}};
  const struct {
    std::string text;
    Recipient rcpt;
    std::string want;
  } cases[] = {
      {"S: x\n\nHello {{first|there}},\n", ann, "S: x\r\n\r\nHello Ann,\r\n"},
      {"S: x\n\nHello {{first|there}},\n", bob, "S: x\r\n\r\nHello there,\r\n"},
      {"S: x\n\nHello {{ first | there }},\n", bob, "S: x\r\n\r\nHello there,\r\n"},
      // An empty value takes the default too: both would render "Hello ,".
      {"S: x\n\nHello {{empty|you}}\n", ann, "S: x\r\n\r\nHello you\r\n"},
      {"S: x\n\nHello {{first|}}!\n", bob, "S: x\r\n\r\nHello !\r\n"},
      // Escapes: a backslash takes the next octet; a second '|' is plain text.
      {"S: x\n\n{{first|a\\}\\}b}}\n", bob, "S: x\r\n\r\na}}b\r\n"},
      {"S: x\n\n{{first|a|b}}\n", bob, "S: x\r\n\r\na|b\r\n"},
      {"S: x\n\n{{first|c:\\\\dir}}\n", bob, "S: x\r\n\r\nc:\\dir\r\n"},
      {"S: x\n\n{{first|\\{{x}}}}\n", bob, "S: x\r\n\r\n{{x}}\r\n"},
      {"S: x\n\n[{{first|\\ two words\\ }}]\n", bob, "S: x\r\n\r\n[ two words ]\r\n"},
      // Placeholders for one variable keep their own defaults.
      {"S: {{first|Sir}}\n\n{{first|friend}} {{first}}.\n", bob, "S: Sir\r\n\r\nfriend .\r\n"},
      // {{to}} always has a value: its default never shows.
      {"S: x\n\n{{to|nobody}}\n", bob, "S: x\r\n\r\nbob@example.com\r\n"},
      // A default is never expanded again.
      {"S: x\n\n{{first|\\{{to\\}\\}}}\n", bob, "S: x\r\n\r\n{{to}}\r\n"},
  };
  for (const auto& c : cases) {
    absl::StatusOr<Template> t = Template::Compile(c.text);
    ASSERT_TRUE(t.ok()) << c.text << ": " << t.status();
    std::string got;
    t->Render(c.rcpt, &got);
    EXPECT_EQ(got, c.want) << "text: " << c.text;
  }
}

TEST(TemplateDefaultTest, UsesSayWhichLinesLackADefault) {
  absl::StatusOr<Template> t =
      Template::Compile("S: {{a|x}}\n\n{{b}} {{a}}\n{{c|y}} {{c|z}}\n{{b|w}}\n");
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<Template::Use> uses = t->variable_uses();
  ASSERT_EQ(uses.size(), 3u);
  EXPECT_EQ(uses[0].name, "a");
  EXPECT_EQ(uses[0].first_line, 1u);
  EXPECT_EQ(uses[0].line_without_default, 3u);
  EXPECT_EQ(uses[1].name, "b");
  EXPECT_EQ(uses[1].line_without_default, 3u);
  EXPECT_EQ(uses[2].name, "c");
  EXPECT_EQ(uses[2].first_line, 4u);
  EXPECT_EQ(uses[2].line_without_default, 0u);
}

TEST(TemplateDefaultTest, LineLengthCountsTheDefaultForAnEmptyValue) {
  // Line 3 is "12345678" and three {{n|<250 octets>}}: with no value for n it
  // renders 758 octets (the defaults counted); a value of 330 renders 998, 331
  // renders 1001.
  const std::string placeholder = "{{n|" + std::string(250, 'd') + "}}";
  const std::string text = "S: x\n\n12345678" + placeholder + placeholder + placeholder + "\n";
  absl::StatusOr<Template> t = Template::Compile(text);
  ASSERT_TRUE(t.ok()) << t.status();
  const Recipient none{"a@b.test", {}};
  EXPECT_EQ(t->LongestLine(none).length, 758u);
  EXPECT_TRUE(t->CheckLineLength(none).ok());
  std::string rendered;
  t->Render(none, &rendered);
  EXPECT_EQ(rendered.size(), std::string("S: x\r\n\r\n").size() + 758 + 2);
  EXPECT_TRUE(t->CheckLineLength(Recipient{"a@b.test", {{"n", std::string(330, 'v')}}}).ok());
  const Recipient long_value{"a@b.test", {{"n", std::string(331, 'v')}}};
  EXPECT_EQ(t->LongestLine(long_value).length, 1001u);
  EXPECT_EQ(std::string(t->CheckLineLength(long_value).message()),
            "vars.n: renders message line 3 at 1001 octets, over 998");
}

TEST(TemplateDefaultTest, PlaceholderLengthSkipsEscapedBraces) {
  EXPECT_EQ(PlaceholderLength("{{a}}x"), 5u);
  EXPECT_EQ(PlaceholderLength("{{a|x\\}\\}}}@"), 11u);  // {{a|x\}\}}}
  EXPECT_EQ(PlaceholderLength("{{a|x"), 0u);
  EXPECT_EQ(PlaceholderLength("x{{a}}"), 0u);
  // return_path's check probes the literal parts around each placeholder.
  EXPECT_TRUE(CheckInlineTemplate("b-{{id|\\}\\}}}@x.test").ok());
}

TEST(TemplateDefaultTest, InlineTemplatesTakeDefaults) {
  EXPECT_TRUE(CheckInlineTemplate("b-{{tag|none}}@x.test").ok());
  EXPECT_EQ(std::string(CheckInlineTemplate("{{tag|x").message()), "unclosed {{");
  std::string out;
  ASSERT_TRUE(AppendRenderedInline("b-{{tag|none}}@x.test", Recipient{"a@b.test", {}}, &out));
  EXPECT_EQ(out, "b-none@x.test");
  out.clear();
  ASSERT_TRUE(AppendRenderedInline("https://u.test/?l={{list|a b}}", Recipient{"a@b.test", {}},
                                   Builtins{}, InlineValues::kPercentEncoded, &out));
  EXPECT_EQ(out, "https://u.test/?l=a%20b");
  const std::vector<InlineVariable> vars = InlineTemplateVariables("{{a}}-{{b|x}}");
  ASSERT_EQ(vars.size(), 2u);
  EXPECT_EQ(vars[0].name, "a");
  EXPECT_FALSE(vars[0].has_default);
  EXPECT_EQ(vars[1].name, "b");
  EXPECT_TRUE(vars[1].has_default);
}

}  // namespace
}  // namespace volley::queue
