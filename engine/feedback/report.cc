// report.cc - see report.h. GMime parses; this file picks parts and reads fields.
#include "engine/feedback/report.h"

#include <gmime/gmime.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "re2/re2.h"

namespace volley::feedback {
namespace {

using base::Sv;

re2::StringPiece Rp(std::string_view s) { return re2::StringPiece(s.data(), s.size()); }

// ---------------------------------------------------------------------------
// GMime plumbing

void InitGMimeOnce() {
  // g_mime_init() is not itself safe to call from two threads at once, and must
  // run once before any other GMime call; g_mime_shutdown() is never called (the
  // process may parse until it exits).
  static std::once_flag once;
  std::call_once(once, [] { g_mime_init(); });
}

struct GObjectUnref {
  void operator()(void* p) const {
    if (p != nullptr) g_object_unref(p);
  }
};
template <typename T>
using GPtr = std::unique_ptr<T, GObjectUnref>;

struct OptionsFree {
  void operator()(GMimeParserOptions* p) const { g_mime_parser_options_free(p); }
};
using OptionsPtr = std::unique_ptr<GMimeParserOptions, OptionsFree>;

struct GFree {
  void operator()(void* p) const { g_free(p); }
};

// The parse of one message: its options, and what GMime complained about.
struct Context {
  const ParseLimits& limits;
  Report& report;
  OptionsPtr options;
  bool field_cut_noted = false;
  bool traces_cut_noted = false;
};

// Ordinal - "1st", "2nd", "3rd", "4th", "11th", "1000th".
std::string Ordinal(size_t n) {
  const char* suffix = "th";
  if (n % 100 < 11 || n % 100 > 13) {
    if (n % 10 == 1) suffix = "st";
    if (n % 10 == 2) suffix = "nd";
    if (n % 10 == 3) suffix = "rd";
  }
  return absl::StrCat(n, suffix);
}

void AddNote(Report& r, std::string note) {
  if (r.notes.size() + 1 < kMaxNotes) {
    r.notes.push_back(std::move(note));
  } else if (r.notes.size() + 1 == kMaxNotes) {
    r.notes.push_back("more notes dropped");
  }
}

OptionsPtr MakeOptions() {
  OptionsPtr o(g_mime_parser_options_new());
  // Reports come from every kind of MTA; loose is GMime's default, said here
  // because strict parsing would lose exactly the odd ones.
  g_mime_parser_options_set_address_compliance_mode(o.get(), GMIME_RFC_COMPLIANCE_LOOSE);
  g_mime_parser_options_set_parameter_compliance_mode(o.get(), GMIME_RFC_COMPLIANCE_LOOSE);
  g_mime_parser_options_set_rfc2047_compliance_mode(o.get(), GMIME_RFC_COMPLIANCE_LOOSE);
  // Raw 8-bit header text: UTF-8 if it is valid, else Latin-1 (every octet is one).
  const char* charsets[] = {"utf-8", "iso-8859-1", nullptr};
  g_mime_parser_options_set_fallback_charsets(o.get(), charsets);
  return o;
}

GMimeStream* MemStream(std::string_view bytes) {
  return g_mime_stream_mem_new_with_buffer(bytes.data(), bytes.size());
}

// ---------------------------------------------------------------------------
// Text hygiene: every string handed out is valid UTF-8, without control characters

// Clean - `s` as valid UTF-8 (invalid octets become U+FFFD), control characters a
// space (except "\n" and "\t" when keep_newlines; "\r" is dropped then), cut at a
// character boundary to at most `max` octets. *cut says whether it was cut.
std::string Clean(std::string_view s, size_t max, bool keep_newlines, bool* cut = nullptr) {
  std::string out;
  out.reserve(std::min(s.size(), max));
  size_t i = 0;
  bool was_cut = false;
  while (i < s.size()) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    std::string_view piece;
    std::string replacement;
    size_t step = 1;
    if (c < 0x80) {
      if (c == '\r' && keep_newlines) {
        ++i;
        continue;
      }
      bool control = c < 0x20 || c == 0x7f;
      if (control && !(keep_newlines && (c == '\n' || c == '\t'))) {
        replacement = " ";
      } else {
        piece = s.substr(i, 1);
      }
    } else {
      size_t n = base::Utf8SequenceLength(s, i);
      if (n == 0) {
        replacement = "\xEF\xBF\xBD";  // U+FFFD
      } else {
        step = n;
        piece = s.substr(i, n);
      }
    }
    std::string_view add = replacement.empty() ? piece : std::string_view(replacement);
    if (out.size() + add.size() > max) {
      was_cut = true;
      break;
    }
    out.append(add);
    i += step;
  }
  if (cut != nullptr) *cut = was_cut;
  return out;
}

// Field - Clean for a one-line field: white space runs as one space, trimmed, at
// most max_field_bytes, the first cut noted.
std::string Field(Context& ctx, std::string_view s) {
  std::string collapsed;
  collapsed.reserve(std::min(s.size(), ctx.limits.max_field_bytes * 4 + 4));
  bool space = false;
  for (char ch : s) {
    if (collapsed.size() > ctx.limits.max_field_bytes * 4) break;  // enough for Clean
    unsigned char c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = !collapsed.empty();
      continue;
    }
    if (space) collapsed.push_back(' ');
    space = false;
    collapsed.push_back(ch);
  }
  bool cut = false;
  std::string out = Clean(collapsed, ctx.limits.max_field_bytes, false, &cut);
  if (cut || collapsed.size() > ctx.limits.max_field_bytes * 4) {
    ctx.report.truncated = true;
    if (!ctx.field_cut_noted) {
      ctx.field_cut_noted = true;
      AddNote(ctx.report,
              absl::StrCat("a field was cut to ", ctx.limits.max_field_bytes, " octets"));
    }
  }
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() &&
         (s.front() == ' ' || s.front() == '\t' || s.front() == '\r' || s.front() == '\n')) {
    s.remove_prefix(1);
  }
  while (!s.empty() &&
         (s.back() == ' ' || s.back() == '\t' || s.back() == '\r' || s.back() == '\n')) {
    s.remove_suffix(1);
  }
  return s;
}

std::string Lower(std::string_view s) { return absl::AsciiStrToLower(Sv(s)); }

bool IEquals(std::string_view a, std::string_view b) { return base::EqualsIgnoreCase(a, b); }

// ---------------------------------------------------------------------------
// The pre-scan: bound what GMime builds (see BOUNDS in report.h)

struct Prescan {
  size_t end = 0;   // parse message[0, end)
  std::string why;  // non-empty when the message was cut
};

bool LooksLikeFieldStart(std::string_view line) {
  // RFC 5322 field-name: printable ASCII but ':', then (obsolete syntax) optional
  // white space, then ':'.
  size_t i = 0;
  while (i < line.size() && line[i] > 0x20 && line[i] < 0x7f && line[i] != ':') ++i;
  if (i == 0) return false;
  while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
  return i < line.size() && line[i] == ':';
}

Prescan ScanStructure(std::string_view m, const ParseLimits& limits) {
  const size_t max_dash_lines = limits.max_parts * 10;
  const size_t max_field = limits.max_field_bytes * 16;
  size_t dash_lines = 0, field_lines = 0;
  constexpr size_t kNoField = std::string_view::npos;
  size_t field_start = kNoField;  // of the field that continuation lines extend
  size_t pos = 0;
  while (pos < m.size()) {
    size_t nl = m.find('\n', pos);
    size_t next = nl == std::string_view::npos ? m.size() : nl + 1;
    std::string_view line = m.substr(pos, next - pos);
    if (line.size() >= 2 && line[0] == '-' && line[1] == '-') {
      field_start = kNoField;
      if (++dash_lines > max_dash_lines) {
        return {pos, absl::StrCat("message cut at line starting \"--\" number ", dash_lines,
                                  " (more than 10 * max_parts)")};
      }
    } else if (!line.empty() && (line[0] == ' ' || line[0] == '\t')) {
      // A continuation line (or indented text): counts towards the field it follows.
    } else if (LooksLikeFieldStart(line)) {
      field_start = pos;
      if (++field_lines > limits.max_header_fields) {
        return {pos, absl::StrCat("message cut at header field number ", field_lines,
                                  " (max_header_fields ", limits.max_header_fields, ")")};
      }
    } else {
      field_start = kNoField;
    }
    if (field_start != kNoField && next - field_start > max_field) {
      return {field_start,
              absl::StrCat("message cut at a header field longer than ", max_field, " octets")};
    }
    pos = next;
  }
  return {m.size(), ""};
}

// ---------------------------------------------------------------------------
// Header fields, read by GMime

struct HeaderField {
  std::string name;
  std::string value;  // unfolded, RFC 2047 decoded, UTF-8
};

std::vector<HeaderField> FieldsOf(GMimeObject* object) {
  std::vector<HeaderField> out;
  GMimeHeaderList* list = g_mime_object_get_header_list(object);
  if (list == nullptr) return out;
  int n = g_mime_header_list_get_count(list);
  for (int i = 0; i < n; ++i) {
    GMimeHeader* h = g_mime_header_list_get_header_at(list, i);
    const char* name = g_mime_header_get_name(h);
    const char* value = g_mime_header_get_value(h);
    out.push_back({name ? name : "", value ? value : ""});
  }
  return out;
}

// FieldsOfBlock - the fields of one header block (a DSN group, a feedback report),
// parsed by GMime as the header of a MIME part.
std::vector<HeaderField> FieldsOfBlock(Context& ctx, std::string_view block) {
  GPtr<GMimeStream> stream(MemStream(block));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  GPtr<GMimeObject> part(g_mime_parser_construct_part(parser.get(), ctx.options.get()));
  if (!part) return {};
  return FieldsOf(part.get());
}

// DecodedContent - a leaf part's content, transfer encoding undone (no charset
// conversion). At most the part's encoded size, itself within the message.
std::string DecodedContent(GMimeObject* object) {
  if (!GMIME_IS_PART(object)) return "";
  GMimeDataWrapper* content = g_mime_part_get_content(GMIME_PART(object));
  if (content == nullptr) return "";
  GPtr<GMimeStream> out(g_mime_stream_mem_new());
  if (g_mime_data_wrapper_write_to_stream(content, out.get()) < 0) return "";
  GByteArray* bytes = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(out.get()));
  if (bytes == nullptr || bytes->len == 0) return "";
  return std::string(reinterpret_cast<const char*>(bytes->data), bytes->len);
}

// TextOf - a text part's content in UTF-8 (GMime converts from its charset).
std::string TextOf(GMimeObject* object) {
  if (!GMIME_IS_TEXT_PART(object)) return DecodedContent(object);
  std::unique_ptr<char, GFree> text(g_mime_text_part_get_text(GMIME_TEXT_PART(object)));
  if (!text) return "";
  return std::string(text.get());
}

// ---------------------------------------------------------------------------
// Small readers of field values

// The patterns, compiled once. RE2: linear time whatever the input.
struct Patterns {
  // An RFC 3463 code not inside a longer dotted number (an IP address, a version).
  RE2 enhanced{R"((?:^|[^0-9.])([245])\.(\d{1,3})\.(\d{1,3})(?:[^0-9.]|$))"};
  // A 4xx/5xx SMTP reply where a transcript or a bounce quotes one.
  RE2 reply{R"((?i)(?:^|\n|said:|returned '|reason:|<<<|error:|\)|\s)\s*([45]\d\d)[ -])"};
  RE2 word{R"(([A-Za-z][A-Za-z0-9-]*))"};
  RE2 type_prefix{R"(^\s*[A-Za-z0-9-]+\s*;\s*)"};  // "rfc822;", "dns;"
  RE2 host{R"(^\s*(?:[A-Za-z0-9-]+\s*;)?\s*([^\s();]+))"};
  RE2 bounce_subject{
      R"((?i)^\s*(?:fwd?:\s*)?(?:undeliver|returned mail|return(?:ed)? to sender|)"
      R"(delivery status notification|)"
      R"(delivery (?:failure|failed|has failed|notification|report|problem|delayed)|)"
      R"(mail delivery (?:failed|failure|system|subsystem|problem|delayed)|failure notice|)"
      R"(failed delivery|non[- ]?deliver|nondeliverable|message not delivered|could not send|)"
      R"(mail system error|permanent error|warning: could not send|delayed mail|)"
      R"(message delivery (?:failure|delayed)|mail could not be delivered))"};
  RE2 auto_subject{
      R"((?i)^\s*(?:out of (?:the )?office|automatic reply|)"
      R"(auto(?:matic)?[- ]?(?:reply|response|responder|antwort)|auto:|autoreply|)"
      R"(away from (?:the |my )?office|on vacation|vacation(?: reply| notice)?:|abwesenheit|)"
      R"(r[ée]ponse automatique|respuesta autom[aá]tica))"};
  RE2 daemon_local{R"((?i)^(?:mailer[-_]?daemon|mail[-_]?daemon|postmaster|)"
                   R"(mail[-_]?delivery[-_]?(?:system|subsystem)?)$)"};
  RE2 daemon_name{R"((?i)mail delivery (?:system|subsystem|service)|mailer[-_]?daemon)"};
  RE2 qmail{
      R"((?i)this is the qmail-send program|i'm afraid i wasn't able to deliver your message)"};
  // Bounce wording: a sign only together with a null envelope sender.
  RE2 bounce_words{
      R"((?i)could not be delivered|couldn't be delivered|undeliverable|)"
      R"(delivery (?:has )?failed|user unknown|unknown user|no such user|does not exist|)"
      R"(mailbox (?:is )?unavailable|recipient address rejected|permanent (?:fatal )?error|)"
      R"(returned to sender|not delivered|delivery to the following recipient)"};
  RE2 delay_subject{R"((?i)delay|warning)"};
  RE2 delay_words{R"((?i)still being retried|will (?:continue to )?(?:be )?retr(?:y|ied)|)"
                  R"(has not yet been delivered|not yet been delivered|)"
                  R"((?:message|delivery) (?:is |has been )?delayed|delivery delayed)"};
  // The line after which a text bounce quotes the returned message.
  RE2 copy_marker{
      R"((?im)^(.*(?:below this line is a copy of the message|this is a copy of the message|)"
      R"(original message follows|message headers? follows?|returned message follows|)"
      R"(original message headers|headers of the original message|undelivered message headers|)"
      R"(returned mail follows|text of returned message|original message ---).*)$)"};
  // Where quoted header lines start: any field after a marker; without one, only a
  // field that prose does not begin with.
  RE2 quoted_header_start_strong{
      R"((?im)^((?:return-path|received|message-id|volley-trace|dkim-signature)[ \t]*:))"};
  RE2 quoted_header_start{R"((?m)^([A-Za-z][A-Za-z0-9-]*[ \t]*:))"};
  // An address at the start of a line (a bounce's list of recipients), and the rest.
  RE2 line_address{R"(^[ \t]*<?([^\s<>()\[\]@,;:"]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)"
                   R"((?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+)>?(.*)$)"};
  RE2 dsn_text_recipient{
      R"((?i)^[ \t]*(?:final|original)-recipient[ \t]*:[ \t]*(?:rfc822[ \t]*;)?[ \t]*)"
      R"(<?([^\s<>]+@[^\s<>]+?)>?[ \t]*$)"};
  RE2 rcpt_to{R"((?i)rcpt to:[ \t]*<([^\s<>]+@[^\s<>]+)>)"};
  RE2 remote_returned{R"((?i)remote server returned '([^'\n]*)')"};  // Exchange
  RE2 text_mta{R"((?i)(?:this is the mail system at host|this is the qmail-send program at|)"
               R"(generating server:|reporting-mta:[ \t]*dns;)[ \t]*)"
               R"(([A-Za-z0-9][A-Za-z0-9.-]*[A-Za-z0-9]))"};
};

const Patterns& P() {
  static const Patterns* patterns = new Patterns();
  return *patterns;
}

std::string FirstEnhancedCode(std::string_view s) {
  std::string c, sub, det;
  if (RE2::PartialMatch(Rp(s), P().enhanced, &c, &sub, &det)) {
    return absl::StrCat(c, ".", sub, ".", det);
  }
  return "";
}

// StatusFromText - the first enhanced code in s, else the class of its first
// 4xx/5xx reply ("5.0.0"), else "".
std::string StatusFromText(std::string_view s) {
  std::string code = FirstEnhancedCode(s);
  if (!code.empty()) return code;
  std::string reply;
  if (RE2::PartialMatch(Rp(s), P().reply, &reply)) return absl::StrCat(reply.substr(0, 1), ".0.0");
  return "";
}

// HostOf - "dns; mx.example.test (comment)" -> "mx.example.test".
std::string HostOf(Context& ctx, std::string_view value) {
  std::string host;
  if (!RE2::PartialMatch(Rp(value), P().host, &host)) return "";
  while (!host.empty() && host.back() == '.') host.pop_back();  // "mx.example.test."
  return Field(ctx, host);
}

// AddressOf - "rfc822; Name <a@b.test> (comment)" -> "a@b.test". GMime's address
// parser reads it; what it cannot read is kept as given, brackets stripped.
std::string AddressOf(Context& ctx, std::string_view value) {
  std::string v(value);
  RE2::Replace(&v, P().type_prefix, "");
  std::string_view rest = Trim(v);
  if (rest.empty()) return "";
  if (rest.size() > ctx.limits.max_field_bytes * 4) ctx.report.truncated = true;
  std::string copy(rest.substr(0, ctx.limits.max_field_bytes * 4));
  GPtr<InternetAddressList> list(internet_address_list_parse(ctx.options.get(), copy.c_str()));
  if (list) {
    int n = internet_address_list_length(list.get());
    for (int i = 0; i < n; ++i) {
      InternetAddress* a = internet_address_list_get_address(list.get(), i);
      if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
        const char* addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
        if (addr != nullptr && *addr != '\0') return Field(ctx, addr);
      }
    }
  }
  if (rest.front() == '<') rest.remove_prefix(1);
  if (!rest.empty() && rest.back() == '>') rest.remove_suffix(1);
  return Field(ctx, rest);
}

// AddressesOf - the mailboxes of an address list (groups opened), ", " between.
std::string AddressesOf(Context& ctx, InternetAddressList* list) {
  std::string out;
  if (list == nullptr) return out;
  std::vector<InternetAddressList*> todo = {list};
  int budget = 64;  // addresses looked at, groups included
  while (!todo.empty() && budget > 0) {
    InternetAddressList* l = todo.back();
    todo.pop_back();
    int n = internet_address_list_length(l);
    for (int i = 0; i < n && budget > 0; ++i, --budget) {
      InternetAddress* a = internet_address_list_get_address(l, i);
      if (INTERNET_ADDRESS_IS_MAILBOX(a)) {
        const char* addr = internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(a));
        if (addr == nullptr || *addr == '\0') continue;
        if (!out.empty()) out += ", ";
        out += addr;
      } else if (INTERNET_ADDRESS_IS_GROUP(a)) {
        InternetAddressList* members =
            internet_address_group_get_members(INTERNET_ADDRESS_GROUP(a));
        if (members != nullptr && todo.size() < 8) todo.push_back(members);
      }
    }
  }
  return Field(ctx, out);
}

DsnAction ActionOf(std::string_view value) {
  std::string word;
  if (!RE2::PartialMatch(Rp(value), P().word, &word)) return DsnAction::kUnknown;
  word = Lower(word);
  if (word == "failed") return DsnAction::kFailed;
  if (word == "delayed") return DsnAction::kDelayed;
  if (word == "delivered") return DsnAction::kDelivered;
  if (word == "relayed") return DsnAction::kRelayed;
  if (word == "expanded") return DsnAction::kExpanded;
  return DsnAction::kUnknown;
}

// ---------------------------------------------------------------------------
// The returned message

void AddTrace(Context& ctx, std::string_view value) {
  ReturnedMessage& o = ctx.report.original;
  if (o.traces.size() >= kMaxTraces) {
    ctx.report.truncated = true;
    if (!ctx.traces_cut_noted) {
      ctx.traces_cut_noted = true;
      AddNote(ctx.report,
              absl::StrCat("Volley-Trace values after the ", Ordinal(kMaxTraces), " dropped"));
    }
    return;
  }
  std::string v = Field(ctx, value);
  if (!v.empty()) o.traces.push_back(std::move(v));
}

void ReadReturnedMessage(Context& ctx, GMimeMessage* message) {
  ReturnedMessage& o = ctx.report.original;
  GMimeObject* object = GMIME_OBJECT(message);
  for (const HeaderField& f : FieldsOf(object)) {
    if (IEquals(f.name, "Volley-Trace")) AddTrace(ctx, f.value);
  }
  if (!o.message_id.empty() || !o.from.empty() || !o.subject.empty()) return;  // first wins
  const char* id = g_mime_message_get_message_id(message);
  if (id != nullptr) o.message_id = Field(ctx, id);
  const char* subject = g_mime_message_get_subject(message);
  if (subject != nullptr) o.subject = Field(ctx, subject);
  o.from = AddressesOf(ctx, g_mime_message_get_from(message));
  o.to = AddressesOf(ctx, g_mime_message_get_to(message));
}

// ReadReturnedHeaders - a header block given as text (text/rfc822-headers, or
// lines quoted in a bounce's text), read by GMime as a message without a body.
void ReadReturnedHeaders(Context& ctx, std::string_view block) {
  GPtr<GMimeStream> stream(MemStream(block));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  GPtr<GMimeMessage> message(g_mime_parser_construct_message(parser.get(), ctx.options.get()));
  if (message) ReadReturnedMessage(ctx, message.get());
}

// ---------------------------------------------------------------------------
// The walk over the MIME tree

struct Found {
  std::optional<std::string> delivery_status;  // decoded content
  std::optional<std::string> feedback_report;
  bool returned = false;                  // a returned message or headers part was read
  std::optional<std::string> text;        // first text/plain outside returned messages
  std::optional<std::string> other_text;  // first other text/*
  std::string report_type;                // of the first multipart/report, lower-cased
  bool delivery_status_outside_report = false;
};

bool IsType(GMimeContentType* ct, const char* type, const char* subtype) {
  return ct != nullptr && g_mime_content_type_is_type(ct, type, subtype);
}

void Walk(Context& ctx, GMimeObject* root, Found& found) {
  struct Item {
    GMimeObject* object;
    int depth;
    bool in_report;
  };
  std::vector<Item> stack = {{root, 0, false}};
  size_t parts = 0;
  bool depth_noted = false;
  while (!stack.empty()) {
    Item item = stack.back();
    stack.pop_back();
    if (++parts > ctx.limits.max_parts) {
      ctx.report.truncated = true;
      AddNote(ctx.report,
              absl::StrCat("parts after the ", Ordinal(ctx.limits.max_parts), " not looked at"));
      return;
    }
    GMimeObject* o = item.object;
    GMimeContentType* ct = g_mime_object_get_content_type(o);
    if (GMIME_IS_MULTIPART(o)) {
      bool is_report = IsType(ct, "multipart", "report");
      if (is_report && found.report_type.empty()) {
        const char* rt = g_mime_content_type_get_parameter(ct, "report-type");
        found.report_type = rt != nullptr ? Lower(Trim(rt)) : "(none)";
      }
      if (item.depth >= ctx.limits.max_depth) {
        ctx.report.truncated = true;
        if (!depth_noted) {
          depth_noted = true;
          AddNote(ctx.report, absl::StrCat("parts deeper than max_depth ", ctx.limits.max_depth,
                                           " not looked at"));
        }
        continue;
      }
      GMimeMultipart* mp = GMIME_MULTIPART(o);
      int n = g_mime_multipart_get_count(mp);
      // Children in order: push the first last. No more than can still be looked at.
      int limit = static_cast<int>(std::min<size_t>(n, ctx.limits.max_parts + 1));
      for (int i = limit - 1; i >= 0; --i) {
        stack.push_back(
            {g_mime_multipart_get_part(mp, i), item.depth + 1, item.in_report || is_report});
      }
      continue;
    }
    if (GMIME_IS_MESSAGE_PART(o)) {
      // A returned message (message/rfc822, message/global): read, never descended
      // into (its own parts are what Volley sent, not the report).
      GMimeMessage* m = g_mime_message_part_get_message(GMIME_MESSAGE_PART(o));
      if (m != nullptr) {
        ReadReturnedMessage(ctx, m);
        found.returned = true;
      }
      continue;
    }
    if (IsType(ct, "message", "delivery-status") ||
        IsType(ct, "message", "global-delivery-status")) {
      if (!found.delivery_status) {
        found.delivery_status = DecodedContent(o);
        found.delivery_status_outside_report = !item.in_report;
      }
      continue;
    }
    if (IsType(ct, "message", "feedback-report")) {
      if (!found.feedback_report) found.feedback_report = DecodedContent(o);
      continue;
    }
    if (IsType(ct, "text", "rfc822-headers") || IsType(ct, "message", "global-headers") ||
        IsType(ct, "message", "rfc822-headers")) {
      if (!found.returned) {
        ReadReturnedHeaders(ctx, DecodedContent(o));
        found.returned = true;
      }
      continue;
    }
    if (IsType(ct, "text", "plain") || (ct == nullptr && GMIME_IS_TEXT_PART(o))) {
      if (!found.text) found.text = TextOf(o);
      continue;
    }
    if (IsType(ct, "text", "*")) {
      if (!found.other_text) found.other_text = TextOf(o);
      continue;
    }
  }
}

// ---------------------------------------------------------------------------
// RFC 3464 and RFC 5965 parts

// Groups - the blank-line-separated groups of a delivery-status part.
std::vector<std::string_view> Groups(std::string_view content) {
  std::vector<std::string_view> groups;
  size_t pos = 0, group_start = std::string_view::npos;
  while (pos <= content.size()) {
    size_t nl = content.find('\n', pos);
    size_t end = nl == std::string_view::npos ? content.size() : nl;
    std::string_view line = content.substr(pos, end - pos);
    if (Trim(line).empty()) {
      if (group_start != std::string_view::npos) {
        groups.push_back(content.substr(group_start, pos - group_start));
        group_start = std::string_view::npos;
      }
    } else if (group_start == std::string_view::npos) {
      group_start = pos;
    }
    if (nl == std::string_view::npos) break;
    pos = nl + 1;
  }
  if (group_start != std::string_view::npos) groups.push_back(content.substr(group_start));
  return groups;
}

void ReadDeliveryStatus(Context& ctx, std::string_view content) {
  Report& r = ctx.report;
  std::vector<std::string_view> groups = Groups(content);
  size_t dropped = 0;
  for (std::string_view group : groups) {
    if (r.recipients.size() >= ctx.limits.max_recipients) {
      // Count what is dropped without parsing it: a group naming a recipient.
      if (group.find("ecipient") != std::string_view::npos) ++dropped;
      continue;
    }
    std::vector<HeaderField> fields = FieldsOfBlock(ctx, group);
    std::optional<DsnRecipient> current;
    auto flush = [&] {
      if (!current) return;
      if (r.recipients.size() < ctx.limits.max_recipients) {
        if (current->status.empty() && !current->diagnostic_code.empty()) {
          current->status = StatusFromText(current->diagnostic_code);
          if (!current->status.empty()) {
            AddNote(r, "a recipient without Status: status taken from its Diagnostic-Code");
          }
        }
        r.recipients.push_back(std::move(*current));
      } else {
        ++dropped;
      }
      current.reset();
    };
    for (const HeaderField& f : fields) {
      const std::string& n = f.name;
      if (IEquals(n, "Reporting-MTA")) {
        if (r.reporting_mta.empty()) r.reporting_mta = HostOf(ctx, f.value);
      } else if (IEquals(n, "Final-Recipient")) {
        // A second Final-Recipient in one group: a sender that left out the blank
        // line; it starts the next recipient.
        if (current && !current->final_recipient.empty()) flush();
        if (!current) current.emplace();
        current->final_recipient = AddressOf(ctx, f.value);
      } else if (IEquals(n, "Original-Recipient")) {
        if (current && !current->original_recipient.empty()) flush();
        if (!current) current.emplace();
        current->original_recipient = AddressOf(ctx, f.value);
      } else if (IEquals(n, "Action")) {
        if (!current) current.emplace();
        current->action = ActionOf(f.value);
      } else if (IEquals(n, "Status")) {
        if (!current) current.emplace();
        current->status = FirstEnhancedCode(f.value);
      } else if (IEquals(n, "Diagnostic-Code")) {
        if (!current) current.emplace();
        current->diagnostic_code = Field(ctx, f.value);
      } else if (IEquals(n, "Remote-MTA")) {
        if (!current) current.emplace();
        current->remote_mta = HostOf(ctx, f.value);
      }
    }
    // A per-message group may carry Action or Status only by mistake: a "recipient"
    // without an address is not one.
    if (current && current->final_recipient.empty() && current->original_recipient.empty()) {
      current.reset();
    }
    flush();
  }
  if (dropped > 0) {
    r.truncated = true;
    AddNote(r, absl::StrCat("recipients after the ", Ordinal(ctx.limits.max_recipients),
                            " dropped (", dropped, " more)"));
  }
  for (DsnRecipient& d : r.recipients) {
    if (d.final_recipient.empty()) d.final_recipient = d.original_recipient;
  }
}

void ReadFeedbackReport(Context& ctx, std::string_view content) {
  Report& r = ctx.report;
  FeedbackReport& fb = r.feedback;
  size_t dropped = 0;
  for (const HeaderField& f : FieldsOfBlock(ctx, content)) {
    const std::string& n = f.name;
    if (IEquals(n, "Feedback-Type")) {
      std::string word;
      if (RE2::PartialMatch(Rp(f.value), P().word, &word))
        fb.feedback_type = Field(ctx, Lower(word));
    } else if (IEquals(n, "User-Agent")) {
      fb.user_agent = Field(ctx, f.value);
    } else if (IEquals(n, "Original-Mail-From")) {
      fb.original_mail_from = AddressOf(ctx, f.value);
    } else if (IEquals(n, "Original-Rcpt-To")) {
      if (fb.original_rcpt_to.size() < ctx.limits.max_recipients) {
        fb.original_rcpt_to.push_back(AddressOf(ctx, f.value));
      } else {
        ++dropped;
      }
    } else if (IEquals(n, "Arrival-Date") || IEquals(n, "Received-Date")) {
      if (fb.arrival_date.empty()) fb.arrival_date = Field(ctx, f.value);
    } else if (IEquals(n, "Source-IP")) {
      fb.source_ip = HostOf(ctx, f.value);
    } else if (IEquals(n, "Reported-Domain")) {
      if (fb.reported_domain.empty()) fb.reported_domain = Field(ctx, f.value);
    } else if (IEquals(n, "Reporting-MTA")) {
      if (r.reporting_mta.empty()) r.reporting_mta = HostOf(ctx, f.value);
    }
  }
  if (dropped > 0) {
    r.truncated = true;
    AddNote(r, absl::StrCat("Original-Rcpt-To after the ", Ordinal(ctx.limits.max_recipients),
                            " dropped (", dropped, " more)"));
  }
}

// ---------------------------------------------------------------------------
// Non-standard bounces: recipients and returned headers from the text

// Lines - the lines of s (LF-separated; any CR already dropped by Clean).
std::vector<std::string_view> Lines(std::string_view s) {
  std::vector<std::string_view> lines;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t nl = s.find('\n', pos);
    if (nl == std::string_view::npos) {
      lines.push_back(s.substr(pos));
      break;
    }
    lines.push_back(s.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return lines;
}

bool IsDaemonAddress(std::string_view address) {
  size_t at = address.rfind('@');
  std::string_view local = at == std::string_view::npos ? address : address.substr(0, at);
  return RE2::FullMatch(Rp(local), P().daemon_local);
}

// ReadBounceText - recipients (and returned headers, when no MIME part gave them)
// from the text of a bounce without a delivery-status part.
void ReadBounceText(Context& ctx, std::string_view text, bool delayed,
                    const std::vector<std::string>& failed_header) {
  Report& r = ctx.report;
  std::string_view region = text;
  // The returned copy, if quoted: the recipients are before it, its header after.
  re2::StringPiece marker;
  if (RE2::PartialMatch(Rp(text), P().copy_marker, &marker)) {
    size_t at = static_cast<size_t>(marker.data() - text.data());
    region = text.substr(0, at);
  }
  if (r.original.message_id.empty() && r.original.traces.empty()) {
    std::string_view after = text.substr(region.size());
    re2::StringPiece start;
    const RE2& start_re =
        region.size() < text.size() ? P().quoted_header_start : P().quoted_header_start_strong;
    std::string_view search = region.size() < text.size() ? after : text;
    if (RE2::PartialMatch(Rp(search), start_re, &start)) {
      std::string_view block = search.substr(static_cast<size_t>(start.data() - search.data()));
      if (region.size() == text.size()) {
        // No marker: the quoted header is not part of the recipients' region.
        region = text.substr(0, static_cast<size_t>(block.data() - text.data()));
      }
      size_t end = block.find("\n\n");
      std::string header(block.substr(0, end == std::string_view::npos ? block.size() : end));
      header += "\n\n";
      ReadReturnedHeaders(ctx, header);
      if (!r.original.message_id.empty() || !r.original.traces.empty()) {
        AddNote(r, "returned message read from header lines quoted in the text");
      }
    }
  }

  // Reporting MTA, when the text names it.
  if (r.reporting_mta.empty()) {
    std::string host;
    if (RE2::PartialMatch(Rp(text), P().text_mta, &host)) r.reporting_mta = Field(ctx, host);
  }

  struct Candidate {
    std::string address;
    std::string paragraph;
  };
  std::vector<Candidate> candidates;
  absl::flat_hash_set<std::string> seen;
  std::string original_from = Lower(r.original.from);
  size_t dropped = 0;
  auto add = [&](std::string address, std::string paragraph) {
    std::string key = Lower(address);
    if (IsDaemonAddress(address) || key == original_from || !seen.insert(key).second) return;
    if (candidates.size() >= ctx.limits.max_recipients) {
      ++dropped;
      return;
    }
    candidates.push_back({std::move(address), std::move(paragraph)});
  };

  std::vector<std::string_view> lines = Lines(region);
  for (size_t i = 0; i < lines.size(); ++i) {
    std::string address, rest;
    std::string_view line = lines[i];
    if (RE2::FullMatch(Rp(line), P().dsn_text_recipient, &address)) {
      add(address, "");
      continue;
    }
    if (!RE2::FullMatch(Rp(line), P().line_address, &address, &rest)) continue;
    // The paragraph: the rest of this line and the lines that follow, up to a blank
    // line or the next address at the start of a line.
    std::string paragraph(rest);
    for (size_t j = i + 1; j < lines.size() && j < i + 20; ++j) {
      if (Trim(lines[j]).empty()) break;
      std::string a2, r2;
      if (RE2::FullMatch(Rp(lines[j]), P().line_address, &a2, &r2)) break;
      paragraph += " ";
      paragraph += lines[j];
      if (paragraph.size() > ctx.limits.max_field_bytes * 2) {
        ctx.report.truncated = true;  // the rest of the paragraph is not searched
        break;
      }
    }
    std::string_view p = Trim(paragraph);
    while (!p.empty() && (p.front() == ':' || p.front() == ' ')) p.remove_prefix(1);
    add(address, std::string(p));
  }
  if (candidates.empty() && failed_header.empty()) {
    re2::StringPiece in(region.data(), region.size());
    std::string address;
    while (RE2::FindAndConsume(&in, P().rcpt_to, &address)) add(address, "");
  }

  // The diagnostic for a recipient whose paragraph has none: Exchange's "Remote
  // Server returned '...'", else the first line of the text with an SMTP reply.
  std::string global_diagnostic;
  std::string remote;
  if (RE2::PartialMatch(Rp(region), P().remote_returned, &remote)) {
    global_diagnostic = remote;
  } else {
    for (std::string_view line : Lines(region)) {
      if (!FirstEnhancedCode(line).empty() || RE2::PartialMatch(Rp(line), P().reply)) {
        global_diagnostic = std::string(Trim(line));
        break;
      }
    }
  }

  auto make = [&](const std::string& address, const std::string& paragraph) {
    DsnRecipient d;
    d.final_recipient = Field(ctx, address);
    d.action = delayed ? DsnAction::kDelayed : DsnAction::kFailed;
    std::string status = StatusFromText(paragraph);
    const std::string& diag = status.empty() ? global_diagnostic : paragraph;
    if (status.empty()) status = StatusFromText(global_diagnostic);
    d.status = status;
    d.diagnostic_code = Field(ctx, diag);
    return d;
  };
  if (!failed_header.empty()) {
    // Exim's X-Failed-Recipients names them; the text gives each its diagnostic.
    for (const std::string& a : failed_header) {
      if (r.recipients.size() >= ctx.limits.max_recipients) {
        ++dropped;
        continue;
      }
      std::string paragraph;
      for (const Candidate& c : candidates) {
        if (IEquals(c.address, a)) paragraph = c.paragraph;
      }
      r.recipients.push_back(make(a, paragraph));
    }
  } else {
    for (const Candidate& c : candidates) r.recipients.push_back(make(c.address, c.paragraph));
  }
  if (dropped > 0) {
    r.truncated = true;
    AddNote(r, absl::StrCat("recipients after the ", Ordinal(ctx.limits.max_recipients),
                            " dropped (", dropped, " more)"));
  }
  if (r.recipients.empty()) AddNote(r, "no recipient found in the text");
}

// ---------------------------------------------------------------------------
// The whole

std::string LocalPart(std::string_view address) {
  size_t at = address.rfind('@');
  return std::string(at == std::string_view::npos ? address : address.substr(0, at));
}

absl::StatusOr<Report> Parse(std::string_view message, std::optional<std::string_view> envelope,
                             const ParseLimits& limits) {
  if (message.size() > limits.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "report of ", message.size(), " octets is over the limit of ", limits.max_message_bytes));
  }
  InitGMimeOnce();
  Report report;
  Context ctx{limits, report, MakeOptions()};

  // An mbox "From " line before the header is not part of the message.
  if (message.substr(0, 5) == "From ") {
    size_t nl = message.find('\n');
    message = nl == std::string_view::npos ? std::string_view() : message.substr(nl + 1);
    AddNote(report, "leading mbox \"From \" line skipped");
  }
  Prescan scan = ScanStructure(message, limits);
  if (!scan.why.empty()) {
    report.truncated = true;
    AddNote(report, scan.why);
  }
  GPtr<GMimeStream> stream(MemStream(message.substr(0, scan.end)));
  GPtr<GMimeParser> parser(g_mime_parser_new_with_stream(stream.get()));
  GPtr<GMimeMessage> parsed(g_mime_parser_construct_message(parser.get(), ctx.options.get()));
  if (!parsed) return absl::InvalidArgumentError("not a message: no header field");
  std::vector<HeaderField> top = FieldsOf(GMIME_OBJECT(parsed.get()));
  if (top.empty()) return absl::InvalidArgumentError("not a message: no header field");

  const char* subject = g_mime_message_get_subject(parsed.get());
  report.subject = subject != nullptr ? Field(ctx, subject) : "";
  InternetAddressList* from_list = g_mime_message_get_from(parsed.get());
  std::string from_all = AddressesOf(ctx, from_list);
  report.from = from_all.substr(0, from_all.find(", "));
  std::string from_name;
  if (from_list != nullptr && internet_address_list_length(from_list) > 0) {
    const char* name = internet_address_get_name(internet_address_list_get_address(from_list, 0));
    if (name != nullptr) from_name = name;
  }

  Found found;
  GMimeObject* body = g_mime_message_get_mime_part(parsed.get());
  if (body != nullptr) Walk(ctx, body, found);

  std::string text = found.text         ? std::move(*found.text)
                     : found.other_text ? std::move(*found.other_text)
                                        : "";
  bool text_cut = false, scan_cut = false;
  report.text = Clean(text, limits.max_text_bytes, true, &text_cut);
  // Cutting Report::text is routine (it is for classification rules, a sample is
  // enough): noted, but not `truncated`. Cutting what is searched is not.
  if (text_cut) AddNote(report, absl::StrCat("text cut to ", limits.max_text_bytes, " octets"));
  std::string scanned = Clean(text, limits.max_scan_bytes, true, &scan_cut);
  if (scan_cut) {
    report.truncated = true;
    AddNote(report,
            absl::StrCat("only the first ", limits.max_scan_bytes, " octets of the text searched"));
  }

  // The signs (report.h, "kind").
  bool explicit_auto = false, auto_submitted = false;
  std::vector<std::string> failed_header;
  bool ndr_header = false;
  for (const HeaderField& f : top) {
    std::string v = Lower(Trim(f.value));
    if (IEquals(f.name, "X-Autoreply") || IEquals(f.name, "X-Autorespond")) {
      if (v != "no" && v != "false") explicit_auto = true;
    } else if (IEquals(f.name, "Precedence")) {
      if (v == "auto_reply" || v == "auto-reply") explicit_auto = true;
    } else if (IEquals(f.name, "Auto-Submitted")) {
      std::string word;
      RE2::PartialMatch(Rp(v), P().word, &word);
      if (!word.empty() && word != "no") auto_submitted = true;
    } else if (IEquals(f.name, "X-Failed-Recipients")) {
      GPtr<InternetAddressList> list(internet_address_list_parse(
          ctx.options.get(), std::string(f.value.substr(0, 65536)).c_str()));
      std::string all = AddressesOf(ctx, list.get());
      size_t pos = 0;
      while (pos < all.size()) {
        size_t comma = all.find(", ", pos);
        std::string one =
            all.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (!one.empty()) failed_header.push_back(one);
        if (comma == std::string::npos) break;
        pos = comma + 2;
      }
    } else if (IEquals(f.name, "X-MS-Exchange-Message-Is-Ndr")) {
      ndr_header = true;
    }
  }
  if (RE2::PartialMatch(Rp(report.subject), P().auto_subject)) explicit_auto = true;

  bool null_sender = false, daemon_sender = false;
  if (envelope) {
    std::string_view e = Trim(*envelope);
    if (e.size() >= 2 && e.front() == '<' && e.back() == '>') e = Trim(e.substr(1, e.size() - 2));
    null_sender = e.empty();
    if (!null_sender) daemon_sender = IsDaemonAddress(e);
  }
  if (!report.from.empty() && RE2::FullMatch(Rp(LocalPart(report.from)), P().daemon_local)) {
    daemon_sender = true;
  }
  if (RE2::PartialMatch(Rp(from_name), P().daemon_name)) daemon_sender = true;
  bool bounce_subject = RE2::PartialMatch(Rp(report.subject), P().bounce_subject);
  bool qmail = RE2::PartialMatch(Rp(scanned), P().qmail);
  bool promised_dsn = found.report_type == "delivery-status";
  bool bounce_words = RE2::PartialMatch(Rp(scanned), P().bounce_words);
  bool bounce_sign = daemon_sender || bounce_subject || qmail || promised_dsn || ndr_header ||
                     !failed_header.empty() || (null_sender && bounce_words);

  if (found.delivery_status) {
    report.kind = ReportKind::kDeliveryStatus;
    if (found.delivery_status_outside_report) {
      AddNote(report, "delivery-status part outside a multipart/report");
    }
    ReadDeliveryStatus(ctx, *found.delivery_status);
    if (report.recipients.empty()) {
      AddNote(report, "delivery-status part without a recipient: recipients read from the text");
      bool delayed = RE2::PartialMatch(Rp(scanned), P().delay_words);
      ReadBounceText(ctx, scanned, delayed, failed_header);
    }
  } else if (found.feedback_report) {
    report.kind = ReportKind::kFeedback;
    ReadFeedbackReport(ctx, *found.feedback_report);
  } else if (explicit_auto) {
    report.kind = ReportKind::kAutoReply;
  } else if (bounce_sign) {
    report.kind = ReportKind::kBounceText;
    if (promised_dsn) AddNote(report, "multipart/report of delivery-status without that part");
    bool delayed = RE2::PartialMatch(Rp(report.subject), P().delay_subject) ||
                   RE2::PartialMatch(Rp(scanned), P().delay_words);
    ReadBounceText(ctx, scanned, delayed, failed_header);
    if (report.reporting_mta.empty() && daemon_sender) {
      size_t at = report.from.rfind('@');
      if (at != std::string::npos) report.reporting_mta = report.from.substr(at + 1);
    }
  } else if (auto_submitted || null_sender) {
    report.kind = ReportKind::kAutoReply;
  } else {
    report.kind = ReportKind::kOther;
  }

  if (report.original.message_id.empty()) {
    const char* irt = g_mime_object_get_header(GMIME_OBJECT(parsed.get()), "In-Reply-To");
    if (irt != nullptr) {
      std::unique_ptr<char, GFree> id(g_mime_utils_decode_message_id(irt));
      if (id) {
        report.original.message_id = Field(ctx, id.get());
        if (!report.original.message_id.empty()) {
          AddNote(report, "returned message id taken from In-Reply-To");
        }
      }
    }
  }
  return report;
}

}  // namespace

absl::StatusOr<Report> ParseReport(std::string_view message, const ParseLimits& limits) {
  return Parse(message, std::nullopt, limits);
}

absl::StatusOr<Report> ParseReport(std::string_view message, std::string_view envelope_sender,
                                   const ParseLimits& limits) {
  return Parse(message, envelope_sender, limits);
}

std::string_view ReportKindName(ReportKind kind) {
  switch (kind) {
    case ReportKind::kDeliveryStatus:
      return "delivery_status";
    case ReportKind::kFeedback:
      return "feedback";
    case ReportKind::kBounceText:
      return "bounce_text";
    case ReportKind::kAutoReply:
      return "auto_reply";
    case ReportKind::kOther:
      return "other";
  }
  return "other";
}

std::string StatusInText(std::string_view text) { return StatusFromText(text); }

std::string_view DsnActionName(DsnAction action) {
  switch (action) {
    case DsnAction::kFailed:
      return "failed";
    case DsnAction::kDelayed:
      return "delayed";
    case DsnAction::kDelivered:
      return "delivered";
    case DsnAction::kRelayed:
      return "relayed";
    case DsnAction::kExpanded:
      return "expanded";
    case DsnAction::kUnknown:
      return "unknown";
  }
  return "unknown";
}

}  // namespace volley::feedback
