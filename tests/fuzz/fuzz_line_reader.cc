// fuzz_line_reader - libFuzzer target for smtp::LineReader (engine/smtp/line_reader.h)
//
// INPUT
//   byte 0    max_line (bits 0-2: 0, 1, 2, 3, 8, 64, 512, 4096); bits 3-7 bound the
//             chunk size
//   byte 1    seed for the chunk sizes
//   the rest  the peer's bytes
//
// DESCRIPTION
//   The bytes are fed in chunks (sizes from bytes 0 and 1), Next() drained after each
//   Feed(). The lines returned must be exactly the CRLF-separated lines of the whole
//   input (a bare CR or LF is an ordinary byte), up to the first line over max_line,
//   which must be an error that sticks (in_error(), every later Next(), after more
//   Feed() too). buffered() must count exactly the octets fed and not yet returned.
//   Every view Next() returns must keep its bytes until the next Feed(), however many
//   Next() calls come between.
//
//   The same bytes, in the same chunks, then go to a BadLine::kReport reader the way a
//   server feeds one (FeedLine(), then NextLine() until kNone). Its results must be
//   exactly the LF-separated lines of the whole input, each a kTooLong when it has
//   more than max_line + 2 octets with its LF, else a kBareLf when no CR comes before
//   the LF, else its text without the CRLF; FeedLine() must take no byte past the
//   first LF; and no more than max_line + 1 octets of an unfinished line may stay
//   buffered once NextLine() says kNone.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/smtp/line_reader.h"

namespace {

[[noreturn]] void Broken(const char* rule) {
  std::fprintf(stderr, "fuzz_line_reader: invariant broken: %s\n", rule);
  std::abort();
}
#define EXPECT(cond)                 \
  do {                               \
    if (!(cond)) Broken(#cond);      \
  } while (0)

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  if (size < 2) return 0;
  static constexpr size_t kMaxLine[] = {0, 1, 2, 3, 8, 64, 512, 4096};
  const size_t max_line = kMaxLine[bytes[0] & 7];
  const size_t max_chunk = (bytes[0] >> 3) + 1;
  uint32_t seed = bytes[1] * 2654435761u + 7;
  std::string_view data(reinterpret_cast<const char*>(bytes) + 2, size - 2);

  // The reference: lines up to the first one that is too long (complete or not).
  struct Line {
    std::string_view text;
    size_t end;  // offset past its CRLF
  };
  std::vector<Line> want;
  using volley::smtp::LineReader;
  bool want_error = false;
  for (size_t pos = 0;;) {
    size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      size_t pending = data.size() - pos;
      if (pending > 0 && data.back() == '\r') --pending;
      want_error = pending > max_line;
      break;
    }
    if (eol - pos > max_line) {
      want_error = true;
      break;
    }
    want.push_back({data.substr(pos, eol - pos), eol + 2});
    pos = eol + 2;
  }

  const uint32_t first_seed = seed;
  LineReader r(max_line);
  size_t fed = 0;
  size_t got = 0;
  bool failed = false;
  while (!failed) {
    if (fed < data.size()) {
      seed = seed * 1103515245u + 12345u;
      size_t n = std::min(size_t{(seed >> 16) % (max_chunk * 8)} + 1, data.size() - fed);
      r.Feed(data.substr(fed, n));
      fed += n;
    }
    // Views handed out since the last Feed(), with copies of what they showed.
    std::vector<std::pair<std::string_view, std::string>> views;
    for (;;) {
      absl::StatusOr<std::optional<std::string_view>> line = r.Next();
      if (!line.ok()) {
        EXPECT(want_error && got == want.size());
        EXPECT(line.status().code() == absl::StatusCode::kInvalidArgument);
        EXPECT(r.in_error());
        r.Feed("ok\r\n");
        EXPECT(r.Next().status() == line.status());
        failed = true;
        break;
      }
      EXPECT(!r.in_error());
      const size_t consumed = got == 0 ? 0 : want[got - 1].end;
      if (!line->has_value()) {
        EXPECT(r.buffered() == fed - consumed);
        break;
      }
      EXPECT(got < want.size());
      EXPECT(**line == want[got].text);
      EXPECT(fed >= want[got].end);
      views.emplace_back(**line, std::string(**line));
      ++got;
      EXPECT(r.buffered() == fed - want[got - 1].end);
    }
    // (An error clears the buffer, so views are checked only while there is none.)
    if (!failed) {
      for (const auto& [view, copy] : views) EXPECT(view == copy);
    }
    if (fed == data.size()) break;
  }
  EXPECT(got == want.size());
  EXPECT(failed == want_error);

  // kReport: the reference, then the reader fed like a server.
  std::vector<std::string> report_want;
  for (size_t pos = 0;;) {
    const size_t lf = data.find('\n', pos);
    if (lf == std::string_view::npos) break;
    const std::string_view line = data.substr(pos, lf - pos);
    if (line.size() + 1 > max_line + 2) {
      report_want.emplace_back("<too long>");
    } else if (line.empty() || line.back() != '\r') {
      report_want.emplace_back("<bare LF>");
    } else {
      report_want.emplace_back(line.substr(0, line.size() - 1));
    }
    pos = lf + 1;
  }
  std::vector<std::string> report_got;
  LineReader server(max_line, volley::smtp::BadLine::kReport);
  seed = first_seed;
  for (size_t at = 0; at < data.size();) {
    seed = seed * 1103515245u + 12345u;
    const size_t n = std::min(size_t{(seed >> 16) % (max_chunk * 8)} + 1, data.size() - at);
    std::string_view chunk = data.substr(at, n);
    at += n;
    while (!chunk.empty()) {
      const size_t used = server.FeedLine(chunk);
      EXPECT(used > 0 && used <= chunk.size());
      EXPECT(chunk.substr(0, used).find('\n') == std::string_view::npos ||
             chunk.substr(0, used).find('\n') == used - 1);
      chunk.remove_prefix(used);
      for (;;) {
        const volley::smtp::Line line = server.NextLine();
        if (line.kind == volley::smtp::Line::Kind::kNone) break;
        switch (line.kind) {
          case volley::smtp::Line::Kind::kText:
            report_got.emplace_back(line.text);
            break;
          case volley::smtp::Line::Kind::kBareLf:
            report_got.emplace_back("<bare LF>");
            break;
          default:
            report_got.emplace_back("<too long>");
            break;
        }
      }
      EXPECT(server.buffered() <= max_line + 1);
      EXPECT(!server.in_error());
    }
  }
  EXPECT(report_got == report_want);
  return 0;
}
