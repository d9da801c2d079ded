// classify.cc - the rule table and its matching (classify.h)
#include "metrics/classify.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "base/strings.h"
#include "re2/re2.h"

namespace volley::metrics {
namespace {

// Each compiled pattern may use this much memory; past it RE2 falls back from
// its DFA to a slower (still linear) matcher instead of growing.
constexpr int64_t kPatternMemory = int64_t{1} << 20;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// Words shared by several default rules.
constexpr std::string_view kUnknownUser =
    R"(user unknown|unknown user|no such (user|mailbox|recipient)|does not exist|)"
    R"(doesn'?t (exist|have an? .{0,40}account)|recipient not found|mailbox not found|)"
    R"(invalid (recipient|mailbox|address)|mailbox unavailable|not a valid (mailbox|recipient)|)"
    R"(address (is )?unknown|unrouteable address)";
// "\brate" and not "rate": not "generate", "separate".
constexpr std::string_view kRate =
    R"(\brate|too many|throttl|try again later|unexpected volume|temporarily deferred)";

RE2::Options PatternOptions() {
  RE2::Options o;
  o.set_case_sensitive(false);
  o.set_never_capture(true);  // only "does it match": no submatch bookkeeping
  o.set_log_errors(false);    // the error goes into the config error instead
  o.set_max_mem(kPatternMemory);
  return o;
}

}  // namespace

struct Classifier::Compiled {
  std::string klass;
  std::string code;
  std::string enhanced;
  std::unique_ptr<RE2> text;  // null: any text
};

absl::Status CheckClassName(std::string_view klass) {
  if (klass.empty()) return absl::InvalidArgumentError("must not be empty");
  if (klass.size() > kMaxClassNameLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("longer than ", kMaxClassNameLength, " characters"));
  }
  for (char c : klass) {
    if (!(IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
          c == '-' || c == '.')) {
      return absl::InvalidArgumentError(absl::StrCat(
          "\"", base::Sv(klass), "\": a class name is letters, digits, '_', '-' and '.'"));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckCodeMatcher(std::string_view code) {
  const bool ok = code == "0" ||
                  (!code.empty() && code.size() <= 3 && code[0] >= '2' && code[0] <= '5' &&
                   (code.size() < 2 || IsDigit(code[1])) && (code.size() < 3 || IsDigit(code[2])));
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", base::Sv(code),
      "\" is not a reply code or its first digits (\"550\", \"55\", \"5\"; \"0\": no reply)"));
}

absl::Status CheckEnhancedMatcher(std::string_view enhanced) {
  // "C", "C.S" or "C.S.D": class 2, 4 or 5, then 1 to 3 digits a part (RFC 3463).
  bool ok = !enhanced.empty() &&
            (enhanced[0] == '2' || enhanced[0] == '4' || enhanced[0] == '5');
  size_t parts = 1;
  for (size_t i = 1; ok && i < enhanced.size();) {
    if (enhanced[i] != '.' || parts == 3) {
      ok = false;
      break;
    }
    size_t digits = 0;
    for (++i; i < enhanced.size() && IsDigit(enhanced[i]); ++i) ++digits;
    ok = digits >= 1 && digits <= 3;
    ++parts;
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "\"", base::Sv(enhanced),
      "\" is not an enhanced status code or its first parts (\"5.1.1\", \"5.7\", \"4\")"));
}

absl::Status CheckTextMatcher(std::string_view text) {
  if (text.empty()) return absl::InvalidArgumentError("must not be empty (leave it out)");
  if (text.size() > kMaxClassifyPatternLength) {
    return absl::InvalidArgumentError(
        absl::StrCat("longer than ", kMaxClassifyPatternLength, " characters"));
  }
  RE2 re(text, PatternOptions());
  if (!re.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("not a valid RE2 regular expression: ", re.error()));
  }
  return absl::OkStatus();
}

std::vector<ClassifyRule> DefaultClassifyRules() {
  // The first match wins, so the order matters: Volley's own verdicts first,
  // then enhanced codes whose meaning is unambiguous, then throttling (its
  // replies often mention spam or policy), then broader codes, and last the
  // text of replies without a telling code. docs/delivery-log.md lists this
  // table and deploy/volley.toml mirrors it: change all three together.
  return {
      // Volley's DNS verdicts (dns/mx.h) come without a reply: code 0. A server's
      // 550 5.1.10 is Microsoft's "recipient not found", below.
      {"dns_failure", "0", "5.1.10", ""},
      {"dns_failure", "0", "5.1.2", ""},
      {"dns_failure", "0", "4.4.3", ""},
      {"dns_failure", "0", "4.4.4", ""},
      // Volley's TLS outcomes (engine/smtp/client.cc): the handshake failed; TLS
      // is required and the server does not offer it or refused STARTTLS.
      {"tls_failure", "", "4.7.5", ""},
      {"tls_failure", "", "4.7.10", ""},
      {"invalid_recipient", "", "5.1.1", ""},
      {"invalid_recipient", "", "5.1.3", ""},   // bad address syntax
      {"invalid_recipient", "", "5.1.6", ""},   // moved, no forwarding address
      {"invalid_recipient", "", "5.1.10", ""},  // Microsoft: RecipientNotFound
      {"invalid_recipient", "", "5.1.0", std::string(kUnknownUser)},
      // Exchange Online refuses unknown recipients with 550 5.4.1 "Recipient
      // address rejected: Access denied".
      {"invalid_recipient", "", "5.4.1", "recipient address rejected"},
      {"mailbox_full", "", "5.2.2", ""},
      {"mailbox_full", "", "4.2.2", ""},
      {"inactive_mailbox", "", "5.2.1", ""},
      {"rate_limited", "", "4.7.28", ""},  // Gmail: unusual rate of mail from the IP
      // Before the 421 rule: Gmail's "421-4.7.0 TLS required for RCPT domain".
      {"tls_failure", "", "", R"(\b(start)?tls\b|\bssl\b|certificate)"},
      {"rate_limited", "421", "", ""},
      {"rate_limited", "", "4.7.0", R"(\brate|try again later|too many)"},
      {"rate_limited", "451", "4.7", R"(throttl|\brate|too many)"},
      // A deferral that says it in words: Gmail's 450 4.2.1 "receiving mail at a
      // rate that...", Outlook's 451 4.7.500 "Server busy. Please try again later".
      {"rate_limited", "4", "", std::string(kRate)},
      {"content_rejected", "", "5.6", ""},
      {"content_rejected", "", "5.3.4", ""},  // larger than the server takes
      {"content_rejected", "", "5.2.3", ""},  // larger than the mailbox takes
      {"content_rejected", "", "5.7",
       R"(content|message rejected|virus|malware|attachment)"},
      {"policy", "", "5.7", ""},
      {"policy", "", "4.7", ""},  // RFC 3463: X.7.X is security or policy
      // Replies without a telling enhanced code.
      {"invalid_recipient", "5", "", std::string(kUnknownUser)},
      {"mailbox_full", "", "", R"(quota|mailbox (is )?full|insufficient (storage|space))"},
      {"inactive_mailbox", "", "",
       R"(disabled|inactive|deactivated|suspended|no longer (active|in use))"},
      {"policy", "", "",
       R"(block|blacklist|denylist|spam|policy|reputation|dmarc|\bspf\b|dkim|)"
       R"(access denied|not allowed)"},
  };
}

Classifier::Classifier(std::vector<Compiled> rules) : rules_(std::move(rules)) {}
Classifier::Classifier(Classifier&&) noexcept = default;
Classifier& Classifier::operator=(Classifier&&) noexcept = default;
Classifier::~Classifier() = default;

absl::StatusOr<Classifier> Classifier::Create(const std::vector<ClassifyRule>& rules) {
  if (rules.size() > kMaxClassifyRules) {
    return absl::InvalidArgumentError(absl::StrCat("classify: ", rules.size(),
                                                   " rules; at most ", kMaxClassifyRules));
  }
  std::vector<Compiled> compiled;
  compiled.reserve(rules.size());
  for (size_t i = 0; i < rules.size(); ++i) {
    const ClassifyRule& r = rules[i];
    const auto bad = [i](std::string_view key, const absl::Status& why) {
      return absl::InvalidArgumentError(
          absl::StrCat("classify[", i + 1, "].", base::Sv(key), ": ", why.message()));
    };
    if (absl::Status st = CheckClassName(r.klass); !st.ok()) return bad("class", st);
    if (!r.code.empty()) {
      if (absl::Status st = CheckCodeMatcher(r.code); !st.ok()) return bad("code", st);
    }
    if (!r.enhanced.empty()) {
      if (absl::Status st = CheckEnhancedMatcher(r.enhanced); !st.ok()) return bad("enhanced", st);
    }
    Compiled c{r.klass, r.code, r.enhanced, nullptr};
    if (!r.text.empty()) {
      if (absl::Status st = CheckTextMatcher(r.text); !st.ok()) return bad("text", st);
      c.text = std::make_unique<RE2>(r.text, PatternOptions());
    }
    compiled.push_back(std::move(c));
  }
  return Classifier(std::move(compiled));
}

std::string_view Classifier::Classify(DeliveryStatus status, int code,
                                      std::string_view enhanced, std::string_view text) const {
  switch (status) {
    case DeliveryStatus::kExpired: return kExpiredClass;
    case DeliveryStatus::kBounced:
    case DeliveryStatus::kDeferred:
    case DeliveryStatus::kBouncedAsync:  // a DSN's status and diagnostic, as a reply's
    case DeliveryStatus::kDelayedAsync: break;
    case DeliveryStatus::kDelivered:
    case DeliveryStatus::kCancelled:
    case DeliveryStatus::kSuppressed:
    case DeliveryStatus::kComplained:
    case DeliveryStatus::kUnsubscribed:
    case DeliveryStatus::kUnmatched: return {};
  }
  // The code as the digits a matcher is a prefix of; "0" for no reply.
  char digits[4] = {'0', '\0', '\0', '\0'};
  size_t ndigits = 1;
  if (code >= 100 && code <= 999) {
    digits[0] = static_cast<char>('0' + code / 100);
    digits[1] = static_cast<char>('0' + code / 10 % 10);
    digits[2] = static_cast<char>('0' + code % 10);
    ndigits = 3;
  } else if (code != 0) {
    ndigits = 0;  // not a reply code: only rules without a code matcher apply
  }
  const std::string_view code_text(digits, ndigits);
  const std::string_view searched = text.substr(0, kMaxClassifiedText);
  for (const Compiled& r : rules_) {
    if (!r.code.empty()) {
      // "0" must not be a prefix match: it is "no reply", and no reply code
      // starts with 0.
      const bool match = r.code == "0" ? code == 0
                                       : code != 0 && code_text.substr(0, r.code.size()) == r.code;
      if (!match) continue;
    }
    if (!r.enhanced.empty()) {
      // Whole parts only: "5.1.1" is not a prefix of "5.1.10".
      const size_t n = r.enhanced.size();
      const bool match = enhanced.substr(0, n) == r.enhanced &&
                         (enhanced.size() == n || enhanced[n] == '.');
      if (!match) continue;
    }
    if (r.text != nullptr && !RE2::PartialMatch(searched, *r.text)) continue;
    return r.klass;
  }
  return kOtherClass;
}

std::vector<std::string> Classifier::Classes() const {
  std::vector<std::string> out;
  const auto add = [&out](std::string_view c) {
    for (const std::string& seen : out) {
      if (seen == c) return;
    }
    out.emplace_back(c);
  };
  for (const Compiled& r : rules_) add(r.klass);
  add(kExpiredClass);
  add(kOtherClass);
  return out;
}

}  // namespace volley::metrics
