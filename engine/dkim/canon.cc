// canon.cc - header parsing and canonicalisation (see canon.h and dkim.h)
#include "engine/dkim/canon.h"

#include <algorithm>
#include <utility>

#include "base/strings.h"

namespace volley::dkim {
namespace internal {

size_t ParseHeader(std::string_view message, std::vector<Field>* fields) {
  fields->clear();
  LineReader lines(message);
  size_t pos = 0;
  while (pos < message.size()) {
    const LineAt line = lines.Next(pos);
    if (line.end == pos) return line.next;  // the empty line: the body follows
    if (IsWsp(message[pos])) {
      // A continuation: the field so far grows to the end of this line.
      if (!fields->empty()) {
        Field& f = fields->back();
        f.text = std::string_view(f.text.data(),
                                  static_cast<size_t>(message.data() + line.next - f.text.data()));
      }
    } else {
      const std::string_view content = message.substr(pos, line.end - pos);
      const size_t colon = content.find(':');
      std::string_view name;
      if (colon != std::string_view::npos) {
        name = content.substr(0, colon);
        while (!name.empty() && IsWsp(name.back())) name.remove_suffix(1);
      }
      fields->push_back({name, message.substr(pos, line.next - pos)});
    }
    pos = line.next;
  }
  return message.size();
}

std::string_view BodyOf(std::string_view message) {
  LineReader lines(message);
  size_t pos = 0;
  while (pos < message.size()) {
    const LineAt line = lines.Next(pos);
    if (line.end == pos) return message.substr(line.next);
    pos = line.next;
  }
  return {};
}

void AppendCanonicalHeader(Canon c, std::string_view field, std::string* out) {
  if (c == Canon::kSimple) {
    // Unchanged, but for line ends: PrepareData sends every one as CRLF, and adds one
    // to a last line without it.
    LineReader lines(field);
    size_t pos = 0;
    while (pos < field.size()) {
      const LineAt line = lines.Next(pos);
      out->append(field.substr(pos, line.end - pos));
      out->append(kCrlf);
      pos = line.next;
    }
    if (field.empty()) out->append(kCrlf);
    return;
  }
  // Relaxed (3.4.2): the name in lower case without white space before the colon; the
  // value unfolded (line ends dropped, keeping the white space after them), each run of
  // SP and HTAB one SP, none at either end of the value.
  size_t colon = field.find(':');
  std::string_view name = field.substr(0, colon);
  std::string_view value;
  if (colon != std::string_view::npos) value = field.substr(colon + 1);
  while (!name.empty() && (IsWsp(name.back()) || name.back() == '\r' || name.back() == '\n')) {
    name.remove_suffix(1);
  }
  for (char ch : name) {
    out->push_back(ch >= 'A' && ch <= 'Z' ? static_cast<char>(ch - 'A' + 'a') : ch);
  }
  if (colon == std::string_view::npos) {
    out->append(kCrlf);
    return;
  }
  out->push_back(':');
  bool space = false;    // white space seen since the last octet written
  bool started = false;  // an octet of the value written
  for (char ch : value) {
    if (ch == '\r' || ch == '\n') continue;
    if (IsWsp(ch)) {
      space = true;
      continue;
    }
    if (space && started) out->push_back(' ');
    out->push_back(ch);
    space = false;
    started = true;
  }
  out->append(kCrlf);
}

void AppendSignedFields(Canon c, const std::vector<Field>& fields,
                        const std::vector<std::string_view>& h, std::string* out) {
  // For each name earlier entries of h used: how many fields, from the top, are left
  // to search for its next instance. The search goes on from there, so that a name
  // listed once per instance costs one pass over the fields in all, not one per entry
  // (dkim.h, BOUNDS). A linear table: h names a few dozen distinct fields at most, and a
  // map would cost more than it saves.
  std::vector<std::pair<std::string_view, size_t>> left;
  for (std::string_view name : h) {
    size_t* n_left = nullptr;
    for (auto& [n, k] : left) {
      if (base::EqualsIgnoreCase(n, name)) n_left = &k;
    }
    if (n_left == nullptr) n_left = &left.emplace_back(name, fields.size()).second;
    while (*n_left > 0) {
      const Field& f = fields[--*n_left];
      if (base::EqualsIgnoreCase(f.name, name)) {
        AppendCanonicalHeader(c, f.text, out);
        break;
      }
    }
  }
}

}  // namespace internal

std::string CanonicalizeHeader(Canon c, std::string_view field) {
  std::string out;
  internal::AppendCanonicalHeader(c, field, &out);
  return out;
}

void CanonicalizeBody(Canon c, std::string_view body, std::string* out) {
  out->clear();
  internal::StringSink sink(out);
  internal::CanonBody(c, body, sink);
}

namespace {

// DomainOfFirstMailbox - RFC 5322 address syntax, roughly: enough to find the domain
// of the first mailbox in a From field's value. Quoted strings and comments are skipped (their
// contents can hold '@', '<' and ','), a display name is dropped at '<', a group name
// at ':', and the first mailbox ends at '>', or at ',' or ';' outside brackets.
std::string DomainOfFirstMailbox(std::string_view value) {
  std::string addr;
  int comment_depth = 0;
  bool quoted = false;
  bool angle = false;
  bool literal = false;  // inside a domain literal "[...]", where ':' is data
  for (size_t i = 0; i < value.size(); ++i) {
    const char ch = value[i];
    if (ch == '\r' || ch == '\n') continue;  // folding
    if (quoted) {
      if (ch == '\\') {
        ++i;
      } else if (ch == '"') {
        quoted = false;
      }
      continue;
    }
    if (comment_depth > 0) {
      if (ch == '\\') {
        ++i;
      } else if (ch == '(') {
        ++comment_depth;
      } else if (ch == ')') {
        --comment_depth;
      }
      continue;
    }
    if (literal) {
      if (ch == ']') literal = false;
      if (!internal::IsWsp(ch)) addr.push_back(ch);
      continue;
    }
    bool done = false;
    switch (ch) {
      case '"':
        quoted = true;
        addr.push_back('q');  // a quoted local part stands in as one octet
        break;
      case '(':
        comment_depth = 1;
        break;
      case '[':
        literal = true;
        addr.push_back(ch);
        break;
      case '<':
        addr.clear();
        angle = true;
        break;
      case '>':
        done = angle;
        break;
      case ':':
        if (!angle) addr.clear();  // "Group name: a@b, c@d;"
        break;
      case ',':
      case ';':
        if (angle) break;
        if (addr.find('@') != std::string::npos) {
          done = true;
        } else {
          addr.clear();
        }
        break;
      default:
        if (!internal::IsWsp(ch)) addr.push_back(ch);
    }
    if (done) break;
  }
  const size_t at = addr.rfind('@');
  if (at == std::string::npos) return {};
  std::string domain = addr.substr(at + 1);
  for (char& ch : domain) {
    if (ch >= 'A' && ch <= 'Z') ch = static_cast<char>(ch - 'A' + 'a');
  }
  return domain;
}

}  // namespace

std::string FromDomain(std::string_view message) {
  std::vector<internal::Field> fields;
  internal::ParseHeader(message, &fields);
  for (const internal::Field& f : fields) {
    if (!base::EqualsIgnoreCase(f.name, "from")) continue;
    return DomainOfFirstMailbox(f.text.substr(f.text.find(':') + 1));
  }
  return {};
}

}  // namespace volley::dkim
