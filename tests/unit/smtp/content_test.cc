#include "engine/smtp/content.h"

#include <random>
#include <string>

#include "absl/strings/escaping.h"
#include "gtest/gtest.h"

namespace volley::smtp {
namespace {

TEST(PrepareData, NormalisesStuffsAndTerminates) {
  struct Case {
    std::string in, want;
    uint64_t size;
  };
  const Case cases[] = {
      {"", ".\r\n", 0},
      {"a", "a\r\n.\r\n", 3},
      {"a\r\n", "a\r\n.\r\n", 3},  // final CRLF added once only
      {"a\n", "a\r\n.\r\n", 3},
      {"a\r", "a\r\n.\r\n", 3},
      {"a\nb\rc\r\nd", "a\r\nb\r\nc\r\nd\r\n.\r\n", 12},
      {"a\r\r\nb", "a\r\n\r\nb\r\n.\r\n", 8},  // bare CR, then CRLF: two line ends
      {"a\n\rb", "a\r\n\r\nb\r\n.\r\n", 8},    // LF then CR: two line ends too
      {".", "..\r\n.\r\n", 3},
      {".\r\n", "..\r\n.\r\n", 3},  // a lone dot line must not end DATA
      {"x\n.\n..y\n", "x\r\n..\r\n...y\r\n.\r\n", 11},
      {"a.b\n .c", "a.b\r\n .c\r\n.\r\n", 10},  // only a dot at line start is stuffed
      {"\n", "\r\n.\r\n", 2},
      {"x\r\n.\r\nMAIL FROM:<evil>", "x\r\n..\r\nMAIL FROM:<evil>\r\n.\r\n", 24},
      {"x\n.\rsmuggled", "x\r\n..\r\nsmuggled\r\n.\r\n", 16},
      {std::string("nul\0byte", 8), std::string("nul\0byte\r\n.\r\n", 13), 10},
  };
  for (const auto& c : cases) {
    uint64_t size = 0;
    EXPECT_EQ(PrepareData(c.in, &size), c.want) << "input: " << c.in;
    EXPECT_EQ(size, c.size) << "input: " << c.in;
    EXPECT_EQ(PrepareData(c.in), c.want);
  }
}

// The rule PrepareData follows, a byte at a time: the reference the line-at-a-time
// implementation must match on any input.
std::string ReferencePrepareData(std::string_view message) {
  std::string out;
  bool line_start = true;
  for (size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') ++i;
      out += "\r\n";
      line_start = true;
      continue;
    }
    if (line_start && c == '.') out += '.';
    out += c;
    line_start = false;
  }
  if (!line_start) out += "\r\n";
  return out + ".\r\n";
}

TEST(PrepareData, MatchesTheByteAtATimeRuleOnRandomInput) {
  std::mt19937 rng(11);
  const std::string alphabet = "\r\n.ab\x80";  // endings, dots, text, an 8-bit octet
  for (int round = 0; round < 5000; ++round) {
    std::string message(rng() % 40, ' ');
    for (char& c : message) c = alphabet[rng() % alphabet.size()];
    uint64_t size = 0;
    const std::string got = PrepareData(message, &size);
    ASSERT_EQ(got, ReferencePrepareData(message)) << "input: " << absl::CEscape(message);
    uint64_t bdat_size = 0;
    const std::string bdat = PrepareBdat(message, &bdat_size);
    EXPECT_EQ(bdat_size, bdat.size());
    EXPECT_EQ(size, bdat.size()) << "the SIZE of both is the unstuffed CRLF message";
  }
}

TEST(MessageFromData, UndoesPrepareDataOnRandomInput) {
  std::mt19937 rng(12);
  const std::string alphabet = "\r\n..ab";
  for (int round = 0; round < 5000; ++round) {
    std::string message(rng() % 40, ' ');
    for (char& c : message) c = alphabet[rng() % alphabet.size()];
    uint64_t size = 0;
    ASSERT_EQ(MessageFromData(PrepareData(message)), PrepareBdat(message, &size))
        << "input: " << absl::CEscape(message);
  }
  EXPECT_EQ(MessageFromData(".\r\n"), "");
  EXPECT_EQ(MessageFromData("..\r\n.\r\n"), ".\r\n");
  EXPECT_EQ(MessageFromData("a\r\n...b\r\n.\r\n"), "a\r\n..b\r\n");
}

TEST(HasEightBit, EveryPositionAndLength) {
  // Eight octets a step with a tail: an 8-bit octet is found wherever it is.
  for (size_t n = 0; n <= 40; ++n) {
    std::string text(n, 'a');
    EXPECT_FALSE(HasEightBit(text)) << n;
    for (size_t at = 0; at < n; ++at) {
      std::string with = text;
      with[at] = static_cast<char>(0x80 + at);
      EXPECT_TRUE(HasEightBit(with)) << n << " " << at;
      // Also when the view starts at an odd address.
      EXPECT_TRUE(HasEightBit(std::string_view(with).substr(at > 0 ? 1 : 0))) << n << " " << at;
    }
  }
  EXPECT_FALSE(HasEightBit(std::string("\x7f\x00\x01", 3)));
}

TEST(CheckLineLengths, ReportsTheFirstLongLine) {
  const std::string ok(998, 'x');
  const std::string long_line(999, 'y');
  EXPECT_TRUE(CheckLineLengths("").ok());
  EXPECT_TRUE(CheckLineLengths(ok).ok());
  EXPECT_TRUE(CheckLineLengths(ok + "\r\n" + ok + "\n" + ok + "\r" + ok).ok());

  absl::Status st = CheckLineLengths("a\r\nb\n" + long_line + "\r\n" + long_line);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(st.message(), "line 3 is 999 octets, over 998");

  st = CheckLineLengths("a\n" + long_line);  // last line, no line end
  EXPECT_EQ(st.message(), "line 2 is 999 octets, over 998");

  st = CheckLineLengths("abcdef", 5);
  EXPECT_EQ(st.message(), "line 1 is 6 octets, over 5");
}

TEST(PrepareBdat, NormalisesWithoutStuffingOrTerminator) {
  uint64_t size = 0;
  EXPECT_EQ(PrepareBdat(".a\rb\nc", &size), ".a\r\nb\r\nc\r\n");
  EXPECT_EQ(size, 10u);
  EXPECT_EQ(PrepareBdat("", &size), "");
  EXPECT_EQ(size, 0u);
  EXPECT_EQ(PrepareBdat("x\r\n", &size), "x\r\n");
}

TEST(DowngradeTo7Bit, QuotedPrintableBody) {
  // Trailing white space, '=', control characters and 8-bit octets are encoded.
  absl::StatusOr<std::string> out =
      DowngradeTo7Bit("Subject: x\nContent-Transfer-Encoding: 8bit\nMIME-Version: 1.0\n\n"
                      "a=b \n\xc3\xa9t\xc3\xa9\t\n\x01.\n");
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(*out,
            "Subject: x\r\nMIME-Version: 1.0\r\n"
            "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
            "a=3Db=20\r\n=C3=A9t=C3=A9=09\r\n=01.\r\n");
  EXPECT_FALSE(HasEightBit(*out));

  // Soft line breaks keep every line within 76 octets, and the decoded text is the
  // original: a 300-octet 8-bit line.
  std::string line;
  for (int i = 0; i < 100; ++i) line += "\xc3\xa9x";
  out = DowngradeTo7Bit("Subject: x\n\n" + line + "\n");
  ASSERT_TRUE(out.ok()) << out.status();
  std::string body = out->substr(out->find("\r\n\r\n") + 4);
  std::string decoded;
  size_t start = 0;
  while (start < body.size()) {
    size_t end = body.find("\r\n", start);
    std::string_view l(body.data() + start, end - start);
    EXPECT_LE(l.size(), 76u) << l;
    const bool soft = !l.empty() && l.back() == '=';
    if (soft) l.remove_suffix(1);
    for (size_t i = 0; i < l.size(); ++i) {
      if (l[i] == '=') {
        decoded += static_cast<char>(std::stoi(std::string(l.substr(i + 1, 2)), nullptr, 16));
        i += 2;
      } else {
        decoded += l[i];
      }
    }
    if (!soft) decoded += "\n";
    start = end + 2;
  }
  EXPECT_EQ(decoded, line + "\n");
}

TEST(DowngradeTo7Bit, RefusesWhatItCannotConvert) {
  EXPECT_EQ(DowngradeTo7Bit("Subject: caf\xc3\xa9\n\nx\n").status().message(),
            "8-bit octets in header line 1; the server offers neither 8BITMIME nor "
            "SMTPUTF8");
  EXPECT_EQ(DowngradeTo7Bit("Content-Type: multipart/mixed;\n boundary=b\n\n\xc3\xa9\n")
                .status()
                .message(),
            "8-bit octets in a multipart message, which Volley does not convert, and "
            "the server does not offer 8BITMIME");
  EXPECT_EQ(DowngradeTo7Bit("Content-Transfer-Encoding: Base64\n\n\xc3\xa9\n")
                .status()
                .message(),
            "8-bit octets in a body declared Content-Transfer-Encoding: base64");
}

}  // namespace
}  // namespace volley::smtp
