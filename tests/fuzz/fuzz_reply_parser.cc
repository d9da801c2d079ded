// fuzz_reply_parser - libFuzzer target for smtp::ReplyParser (engine/smtp/reply.h)
//
// INPUT
//   byte 0    options: max_line (bits 0-1: 4096, 512, 16, 5) and max_lines (bits 2-3:
//             100, 3, 1, 2); bits 4-7 bound the chunk size of the third run
//   byte 1    seed for the third run's chunk sizes
//   the rest  the server's bytes
//
// DESCRIPTION
//   The same bytes go through three parsers: fed whole, fed one byte at a time, and fed
//   in chunks whose sizes come from the input's first two bytes; Next() is drained after
//   every Feed(). Each run must return exactly the replies (then the error, if any) that
//   a plain reference reading of reply.h's contract gives for the whole input: reply.h
//   promises the same replies however the bytes are split. Each reply must also hold by
//   itself: code 200-599; enhanced "" or "c.s.d" with c the code's first digit; text
//   free of control characters other than the "\n" joiners, with at most max_lines - 1
//   of those and at most max_line octets per line. Once Next() has failed, it fails
//   again with the same status, after further Feed() too. buffered() is non-zero exactly
//   when octets have arrived past the end of the last reply returned (the client relies
//   on this to catch a server that talks out of turn). A broken rule aborts with a
//   message naming it.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/smtp/reply.h"

namespace {

using volley::smtp::Reply;
using volley::smtp::ReplyParser;
using volley::smtp::ReplyParserOptions;

[[noreturn]] void Broken(const char* rule, const char* run) {
  std::fprintf(stderr, "fuzz_reply_parser: invariant broken (%s run): %s\n", run, rule);
  std::abort();
}
#define EXPECT(cond, run)                  \
  do {                                     \
    if (!(cond)) Broken(#cond, run);       \
  } while (0)

bool IsDigit(char c) { return c >= '0' && c <= '9'; }
bool IsControl(char c) {
  unsigned char u = static_cast<unsigned char>(c);
  return u < 0x20 || u == 0x7f;
}

struct RefReply {
  Reply reply;
  size_t end;  // offset just past the CRLF of its last line
};

struct RefResult {
  std::vector<RefReply> replies;
  bool error = false;
};

// Digits - length of a run of 1 to 3 digits at s[pos], else 0 (RFC 3463).
size_t Digits(std::string_view s, size_t pos) {
  size_t n = 0;
  while (pos + n < s.size() && IsDigit(s[pos + n])) ++n;
  return n <= 3 ? n : 0;
}

// SplitEnhanced - an RFC 3463 code "c.s.d" (c in 2, 4, 5) opening `text` and followed
// by a space or the end: moved into *code, and the text after it (and its space)
// returned.
std::string_view SplitEnhanced(std::string_view text, std::string* code) {
  if (text.size() < 5 || (text[0] != '2' && text[0] != '4' && text[0] != '5') ||
      text[1] != '.') {
    return text;
  }
  size_t s = Digits(text, 2);
  if (s == 0 || 2 + s >= text.size() || text[2 + s] != '.') return text;
  size_t d = Digits(text, 3 + s);
  if (d == 0) return text;
  size_t end = 3 + s + d;
  if (end < text.size() && text[end] != ' ') return text;
  *code = std::string(text.substr(0, end));
  return text.substr(end < text.size() ? end + 1 : end);
}

// Reference - reply.h's contract read plainly over the whole input.
RefResult Reference(std::string_view data, const ReplyParserOptions& opts) {
  RefResult r;
  size_t pos = 0;
  bool in_reply = false;
  size_t lines = 0;
  Reply partial;
  for (;;) {
    size_t eol = data.find("\r\n", pos);
    if (eol == std::string_view::npos) {
      size_t pending = data.size() - pos;
      if (pending > 0 && data.back() == '\r') --pending;
      r.error = pending > opts.max_line;
      return r;
    }
    std::string_view line = data.substr(pos, eol - pos);
    pos = eol + 2;
    if (line.size() > opts.max_line) break;
    if (line.size() < 3 || !IsDigit(line[0]) || !IsDigit(line[1]) || !IsDigit(line[2]) ||
        line[0] < '2' || line[0] > '5' ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      break;
    }
    int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (in_reply && code != partial.code) break;
    if (++lines > opts.max_lines) break;
    std::string enhanced;
    std::string_view text = SplitEnhanced(line.size() > 4 ? line.substr(4) : "", &enhanced);
    if (!in_reply) {
      in_reply = true;
      partial.code = code;
      if (!enhanced.empty() && enhanced[0] != line[0]) {
        enhanced = std::string(1, line[0]) + ".0.0";
      }
      partial.enhanced = enhanced;
    } else {
      partial.text += '\n';
    }
    for (char c : text) partial.text += IsControl(c) ? '?' : c;
    if (line.size() == 3 || line[3] == ' ') {
      r.replies.push_back({std::move(partial), pos});
      partial = Reply();
      in_reply = false;
      lines = 0;
    }
  }
  r.error = true;
  return r;
}

// CheckReply - the rules every reply must keep, whatever the reference says.
void CheckReply(const Reply& reply, const ReplyParserOptions& opts, const char* run) {
  EXPECT(reply.code >= 200 && reply.code <= 599, run);
  const std::string& e = reply.enhanced;
  if (!e.empty()) {
    EXPECT(e[0] == static_cast<char>('0' + reply.code / 100), run);
    size_t s = Digits(e, 2);
    EXPECT(e.size() >= 5 && e[1] == '.' && s > 0 && e.size() > 2 + s && e[2 + s] == '.',
           run);
    EXPECT(Digits(e, 3 + s) == e.size() - 3 - s, run);
  }
  size_t joiners = 0;
  size_t line_len = 0;
  for (char c : reply.text) {
    if (c == '\n') {
      ++joiners;
      line_len = 0;
      continue;
    }
    EXPECT(!IsControl(c), run);
    EXPECT(++line_len <= opts.max_line, run);
  }
  EXPECT(joiners < opts.max_lines, run);
}

// Run - feed `data` in chunks of the sizes next_chunk() gives, draining Next() after
// each, and check the result against the reference.
template <typename NextChunk>
void Run(std::string_view data, const ReplyParserOptions& opts, const RefResult& ref,
         const char* run, NextChunk next_chunk) {
  ReplyParser p(opts);
  size_t fed = 0;
  size_t got = 0;  // replies returned so far
  bool failed = false;
  while (!failed) {
    if (fed < data.size()) {
      size_t n = std::min(next_chunk(), data.size() - fed);
      p.Feed(data.substr(fed, n));
      fed += n;
    }
    for (;;) {
      absl::StatusOr<std::optional<Reply>> r = p.Next();
      if (!r.ok()) {
        EXPECT(ref.error && got == ref.replies.size(), run);
        EXPECT(r.status().code() == absl::StatusCode::kInvalidArgument, run);
        // The error sticks, through more input too.
        EXPECT(p.Next().status() == r.status(), run);
        p.Feed("250 ok\r\n");
        EXPECT(p.Next().status() == r.status(), run);
        failed = true;
        break;
      }
      const size_t last_end = got == 0 ? 0 : ref.replies[got - 1].end;
      if (!r->has_value()) {
        EXPECT((p.buffered() > 0) == (fed > last_end), run);
        // Asking again without new input changes nothing.
        absl::StatusOr<std::optional<Reply>> again = p.Next();
        EXPECT(again.ok() && !again->has_value(), run);
        break;
      }
      const Reply& reply = **r;
      CheckReply(reply, opts, run);
      EXPECT(got < ref.replies.size(), run);
      const RefReply& want = ref.replies[got];
      EXPECT(reply.code == want.reply.code, run);
      EXPECT(reply.enhanced == want.reply.enhanced, run);
      EXPECT(reply.text == want.reply.text, run);
      // A reply is returned only once its last line is in.
      EXPECT(fed >= want.end, run);
      ++got;
      EXPECT((p.buffered() > 0) == (fed > want.end), run);
    }
    if (fed == data.size()) break;
  }
  EXPECT(got == ref.replies.size(), run);
  EXPECT(failed == ref.error, run);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
  if (size < 2) return 0;
  static constexpr size_t kMaxLine[] = {4096, 512, 16, 5};
  static constexpr size_t kMaxLines[] = {100, 3, 1, 2};
  const uint8_t cfg = bytes[0];
  ReplyParserOptions opts;
  opts.max_line = kMaxLine[cfg & 3];
  opts.max_lines = kMaxLines[(cfg >> 2) & 3];
  const size_t max_chunk = (cfg >> 4) + 1;
  uint32_t seed = bytes[1] * 2654435761u + 1;
  std::string_view data(reinterpret_cast<const char*>(bytes) + 2, size - 2);

  const RefResult ref = Reference(data, opts);
  Run(data, opts, ref, "whole", [&] { return data.size(); });
  Run(data, opts, ref, "byte", [] { return size_t{1}; });
  Run(data, opts, ref, "chunked", [&] {
    seed = seed * 1103515245u + 12345u;
    return size_t{(seed >> 16) % (max_chunk * 4)} + 1;
  });
  return 0;
}
