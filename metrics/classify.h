// classify.h - name why a recipient bounced or was deferred, by a rule table
//
// SYNOPSIS
//   ASSIGN_OR_RETURN(Classifier c, Classifier::Create(config.classify));
//   record.klass = c.Classify(record.status, record.code, record.enhanced,
//                             record.response);   // "invalid_recipient", ...
//
// DESCRIPTION
//   A rule names a class and up to three matchers, all of which must match:
//     code      the reply code, or its first one or two digits ("550", "55", "5");
//               "0" matches only outcomes without a reply (Volley's own: DNS
//               verdicts, expired untried)
//     enhanced  the enhanced status code (RFC 3463), or its first one or two
//               parts: "5.1.1" matches 5.1.1 only (not 5.1.10), "5.7" any 5.7.x
//     text      an RE2 regular expression searched for in the reply text,
//               case-insensitively (the first kMaxClassifiedText bytes of it)
//   A rule without matchers matches every failure. The first rule that matches
//   wins; when none does the class is "other". An `expired` record is always
//   "expired": its reply is the last of several tries and may say anything.
//   Records of any other status than bounced, deferred and expired get no class
//   (""): they are not failures.
//
//   RE2 and not std::regex: reply text comes from remote servers, and RE2 runs in
//   time linear in the text, without backtracking or recursion, so no reply can
//   make a pattern slow or overflow the stack.
//
//   DefaultClassifyRules() is the table used when the config has no
//   [[classify]]; docs/delivery-log.md lists it and deploy/volley.toml mirrors it.
//
// CONTRACT
//   Classify is const and thread-safe (RE2 matching is): one Classifier may
//   serve every shard.
#ifndef VOLLEY_METRICS_CLASSIFY_H_
#define VOLLEY_METRICS_CLASSIFY_H_

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "metrics/delivery_status.h"

namespace re2 {
class RE2;
}

namespace volley::metrics {

struct ClassifyRule {
  std::string klass;     // config key "class": what the record's "class" says
  std::string code;      // "" matches any code
  std::string enhanced;  // "" matches any enhanced code (and none)
  std::string text;      // "" matches any text
};

// Bounds on a rule table, so that a config cannot make classifying slow.
inline constexpr size_t kMaxClassifyRules = 256;
inline constexpr size_t kMaxClassNameLength = 64;
inline constexpr size_t kMaxClassifyPatternLength = 1024;
// Only this much of a reply's text is searched: a rule looks for words near the
// start of a reply, and the rest may be any size a server chose to send.
inline constexpr size_t kMaxClassifiedText = 4096;

// The class when no rule matches, and the class of every expired record.
inline constexpr std::string_view kOtherClass = "other";
inline constexpr std::string_view kExpiredClass = "expired";

// Checks of one field of a rule, for the config reader to point at the line:
// InvalidArgument saying what is wrong with the value.
absl::Status CheckClassName(std::string_view klass);
absl::Status CheckCodeMatcher(std::string_view code);
absl::Status CheckEnhancedMatcher(std::string_view enhanced);
absl::Status CheckTextMatcher(std::string_view text);

// DefaultClassifyRules - the shipped table, in order.
std::vector<ClassifyRule> DefaultClassifyRules();

class Classifier {
 public:
  // Create - compile `rules`; an error names the rule ("classify[3].text: ...",
  // counting from 1) and what is wrong.
  static absl::StatusOr<Classifier> Create(const std::vector<ClassifyRule>& rules);

  Classifier(Classifier&&) noexcept;
  Classifier& operator=(Classifier&&) noexcept;
  ~Classifier();

  // Classify - the class of a record with this status and reply; "" when the
  // status is not bounced, deferred or expired. The view stays valid as long as
  // the Classifier.
  std::string_view Classify(DeliveryStatus status, int code, std::string_view enhanced,
                            std::string_view text) const;

  // Classes - every class Classify can return but "", each once, in rule order,
  // then "expired" and "other": a bounded label set for metrics.
  std::vector<std::string> Classes() const;

 private:
  struct Compiled;
  explicit Classifier(std::vector<Compiled> rules);
  std::vector<Compiled> rules_;
};

}  // namespace volley::metrics

#endif  // VOLLEY_METRICS_CLASSIFY_H_
