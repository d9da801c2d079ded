// canon.h - private to engine/dkim: header parsing and canonicalisation (RFC 6376 3.4)
//
// DESCRIPTION
//   Pure functions over a message in place: no OpenSSL, no allocation beyond the
//   caller's vectors and strings. Lines end the way engine/smtp's PrepareData reads
//   them (CRLF, a bare CR or a bare LF), because what is signed must be what the
//   receiver gets after PrepareData has rewritten every line end as CRLF.
//
//   The body canonicaliser is a template over a sink with one method, Add(string_view),
//   so that the same code fills a string (CanonicalizeBody, for tests) and feeds a
//   digest (BodyHash, for the hot path). It passes runs of the message that are already
//   canonical as views into the message, and a sink may join views that are adjacent in
//   memory. A well-formed body then reaches SHA-256 in a handful of updates.
#ifndef VOLLEY_ENGINE_DKIM_CANON_H_
#define VOLLEY_ENGINE_DKIM_CANON_H_

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "engine/dkim/dkim.h"

namespace volley::dkim::internal {

inline constexpr std::string_view kCrlf = "\r\n";

inline bool IsWsp(char c) { return c == ' ' || c == '\t'; }

// LineAt - the line at some `pos`: its content is [pos, end), its ending [end, next) (empty for a
// last line without one), and `crlf` says whether that ending is already a CRLF, so
// the caller may pass it on as it lies.
struct LineAt {
  size_t end;
  size_t next;
  bool crlf;
};

// LineReader - the lines of `s` in order. It remembers where the next LF is, so that a
// text whose lines all end in bare CR is still read in one pass, not one per line.
class LineReader {
 public:
  explicit LineReader(std::string_view s) : s_(s) {}
  // Next - the line that starts at `pos` (< size, and not before the previous call's).
  LineAt Next(size_t pos) {
    const char* const d = s_.data();
    const size_t n = s_.size();
    if (!known_ || lf_ < pos) {
      const void* lf = std::memchr(d + pos, '\n', n - pos);
      lf_ = lf == nullptr ? n : static_cast<size_t>(static_cast<const char*>(lf) - d);
      known_ = true;
    }
    const void* cr = std::memchr(d + pos, '\r', lf_ - pos);
    const size_t end = cr == nullptr ? lf_ : static_cast<size_t>(static_cast<const char*>(cr) - d);
    if (end == n) return {n, n, false};
    if (d[end] == '\r' && end + 1 < n && d[end + 1] == '\n') return {end, end + 2, true};
    return {end, end + 1, false};
  }

 private:
  std::string_view s_;
  size_t lf_ = 0;  // where the next LF at or after the last `pos` is, or size
  bool known_ = false;
};

// Field - one header field: its name as written (trailing WSP before the colon
// dropped; empty for a line without a colon) and its whole text, continuation lines
// and the last line ending included.
struct Field {
  std::string_view name;
  std::string_view text;
};

// ParseHeader - the header fields of `message`, top to bottom, into *fields (replaced);
// returns where the body starts: just after the first empty line, or message.size()
// when there is none. A continuation line before any field is ignored.
size_t ParseHeader(std::string_view message, std::vector<Field>* fields);

// BodyOf - the body of `message` (after the first empty line; empty when none).
std::string_view BodyOf(std::string_view message);

// AppendCanonicalHeader - CanonicalizeHeader, appended to *out.
void AppendCanonicalHeader(Canon c, std::string_view field, std::string* out);

// AppendSignedFields - RFC 6376 section 5.4.2: for each name in `h`, in order, the next
// instance of that name not yet used, counting from the bottom, canonicalised into
// *out; a name with no instance left adds nothing.
void AppendSignedFields(Canon c, const std::vector<Field>& fields,
                        const std::vector<std::string_view>& h, std::string* out);

// CanonBody - RFC 6376 sections 3.4.3 and 3.4.4, into `sink`.
template <typename Sink>
void CanonBody(Canon c, std::string_view body, Sink& sink) {
  // Empty lines are held back until a non-empty line follows, because both
  // canonicalisations drop the empty lines at the end of the body. When every held line
  // was a bare CRLF in the input, they go out as one view of the input.
  size_t held = 0;
  size_t held_from = 0;
  size_t held_to = 0;
  bool held_verbatim = true;
  bool wrote = false;
  const auto release = [&] {
    if (held == 0) return;
    if (held_verbatim) {
      sink.Add(body.substr(held_from, held_to - held_from));
    } else {
      for (size_t i = 0; i < held; ++i) sink.Add(kCrlf);
    }
    held = 0;
    held_verbatim = true;
  };
  const auto hold = [&](size_t from, size_t to, bool verbatim) {
    if (held == 0) held_from = from;
    ++held;
    held_to = to;
    held_verbatim = held_verbatim && verbatim;
  };
  LineReader lines(body);
  size_t pos = 0;
  while (pos < body.size()) {
    const LineAt line = lines.Next(pos);
    std::string_view content = body.substr(pos, line.end - pos);
    const std::string_view ending =
        line.crlf ? body.substr(line.end, 2) : kCrlf;  // a bare CR or LF, or none, is CRLF
    if (c == Canon::kSimple) {
      if (content.empty()) {
        hold(pos, line.next, line.crlf);
      } else {
        release();
        sink.Add(content);
        sink.Add(ending);
        wrote = true;
      }
      pos = line.next;
      continue;
    }
    // Relaxed: white space at the end of a line goes, so a line of only white space is
    // an empty line (and may be dropped at the end).
    size_t len = content.size();
    while (len > 0 && IsWsp(content[len - 1])) --len;
    if (len == 0) {
      hold(pos, line.next, line.crlf && content.empty());
      pos = line.next;
      continue;
    }
    release();
    content = content.substr(0, len);
    // Runs of SP and HTAB become one SP; a lone SP is already canonical and stays in
    // the view, so ordinary prose goes out as one piece per line.
    size_t run_from = 0;
    size_t i = 0;
    while (i < len) {
      if (!IsWsp(content[i])) {
        ++i;
        continue;
      }
      size_t j = i + 1;
      while (j < len && IsWsp(content[j])) ++j;
      if (j - i > 1 || content[i] == '\t') {
        sink.Add(content.substr(run_from, i - run_from));
        sink.Add(" ");
        run_from = j;
      }
      i = j;
    }
    sink.Add(content.substr(run_from));
    sink.Add(ending);
    wrote = true;
    pos = line.next;
  }
  // Simple: "If there is no body or no trailing CRLF on the message body, a CRLF is
  // added" (3.4.3); a body of only empty lines is no body. Relaxed keeps it empty.
  if (c == Canon::kSimple && !wrote) sink.Add(kCrlf);
}

// StringSink - CanonBody into a string.
class StringSink {
 public:
  explicit StringSink(std::string* out) : out_(out) {}
  void Add(std::string_view s) { out_->append(s); }

 private:
  std::string* out_;
};

}  // namespace volley::dkim::internal

#endif  // VOLLEY_ENGINE_DKIM_CANON_H_
