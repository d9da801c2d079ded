#include "engine/compose.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "base/status.h"
#include "base/strings.h"
#include "engine/smtp/content.h"

namespace volley::engine {
namespace {

// IsDotAtomText - RFC 5322 3.2.3, as the left part of a Message-ID must be.
bool IsDotAtomText(std::string_view s) {
  if (s.empty() || s.front() == '.' || s.back() == '.' ||
      s.find("..") != std::string_view::npos) {
    return false;
  }
  for (char c : s) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        std::string_view("!#$%&'*+-/=?^_`{|}~.").find(c) == std::string_view::npos) {
      return false;
    }
  }
  return true;
}

// TemplateFromDomain - the domain of the job template's From field, lower case, or
// "" when there is none or it is not written out ("n@{{d}}" is no domain yet).
std::string TemplateFromDomain(const queue::JobHeader& h) {
  std::string domain = dkim::FromDomain(h.message);
  if (!queue::IsValidDomainName(domain)) domain.clear();
  return domain;
}

// Within(domain, parent) - domain is parent or below it.
bool Within(std::string_view domain, std::string_view parent) {
  if (domain.size() == parent.size()) return base::EqualsIgnoreCase(domain, parent);
  return domain.size() > parent.size() && domain[domain.size() - parent.size() - 1] == '.' &&
         base::EqualsIgnoreCase(domain.substr(domain.size() - parent.size()), parent);
}

bool HasLineBreak(std::string_view s) {
  return s.find_first_of("\r\n") != std::string_view::npos;
}

// FieldsInSmtpForm - JobPlan::fields_in_smtp_form. The job parser refuses CR and
// LF in these already (queue/job.h); checked once a job again, because a line
// break here would make the fast path send what the old one would have mended.
bool FieldsInSmtpForm(const queue::JobHeader& h, const JobPlan& plan) {
  for (const auto& [name, value] : h.headers) {
    if (name.empty() || name.front() == '.' || HasLineBreak(name) || HasLineBreak(value)) {
      return false;
    }
  }
  for (std::string_view s : {std::string_view(h.list_id), std::string_view(h.feedback_id),
                             std::string_view(h.unsubscribe_url),
                             std::string_view(h.unsubscribe_mailto),
                             std::string_view(plan.message_id_left),
                             std::string_view(plan.message_id_domain)}) {
    if (HasLineBreak(s)) return false;
  }
  return true;
}

}  // namespace

std::string FormatRfc5322Date(absl::Time t) {
  return absl::FormatTime("%a, %d %b %Y %H:%M:%S +0000", t, absl::UTCTimeZone());
}

absl::StatusOr<Credentials> Credentials::Load(const Config& config,
                                              std::vector<std::string>* warnings) {
  Credentials c;
  for (size_t i = 0; i < config.dkim.size(); ++i) {
    const DkimKeyConfig& k = config.dkim[i];
    const std::string where =
        absl::StrCat("dkim[", i + 1, "] (", k.domain, ", selector ", k.selector, ")");
    std::vector<std::string> key_warnings;
    absl::StatusOr<dkim::PrivateKey> key = dkim::PrivateKey::LoadFile(k.key_file, &key_warnings);
    if (!key.ok()) {
      return absl::Status(key.status().code(), absl::StrCat(where, ": ", key.status().message()));
    }
    for (const std::string& w : key_warnings) warnings->push_back(absl::StrCat(where, ": ", w));
    DkimKey entry;
    entry.config = k;
    entry.options.domain = k.domain;
    entry.options.selector = k.selector;
    RETURN_IF_ERROR(dkim::ParseCanonicalization(k.canonicalization, &entry.options.header_canon,
                                                &entry.options.body_canon));
    if (!k.headers.empty()) entry.options.headers = k.headers;
    if (k.over_sign) entry.options.over_sign = *k.over_sign;
    entry.options.expire_after = k.expire_after;
    entry.pem = key->ToPem();
    c.dkim_.push_back(std::move(entry));
  }
  if (!config.token_keys.empty()) {
    std::vector<token::KeySpec> specs;
    for (const TokenKeyConfig& k : config.token_keys) specs.push_back({k.id, k.secret_file});
    ASSIGN_OR_RETURN(c.tokens_, token::Keyring::Load(specs, warnings));
  }
  c.verp_domain_ = config.verp_domain;
  return c;
}

Credentials Credentials::ForReload(Credentials next, const Credentials& running) {
  next.tokens_ = running.tokens_;
  next.verp_domain_ = running.verp_domain_;
  return next;
}

std::vector<std::string> Credentials::DkimSelectors() const {
  std::vector<std::string> out;
  for (const DkimKey& k : dkim_) {
    out.push_back(absl::StrCat(k.config.domain, "/", k.config.selector));
  }
  return out;
}

std::string_view Credentials::DkimDomainFor(std::string_view from_domain) const {
  std::string_view best;
  for (const DkimKey& k : dkim_) {
    if (k.config.domain.size() > best.size() && Within(from_domain, k.config.domain)) {
      best = k.config.domain;
    }
  }
  return best;
}

absl::Status Credentials::CheckJob(const queue::JobHeader& h, const queue::Template& t) const {
  if (queue::UsesUnsubscribeToken(h, t) && tokens_.empty()) {
    const bool in_url = queue::InlineTemplateUses(h.unsubscribe_url, queue::kUnsubscribeTokenName);
    return absl::InvalidArgumentError(absl::StrCat(
        in_url ? "unsubscribe_url" : "message",
        ": {{unsubscribe_token}} needs a [[token_key]] in volleyd's config to sign it"));
  }
  if (!h.unsubscribe_url.empty()) {
    // RFC 8058 3.3: the one-click fields count only under a DKIM signature that
    // covers them; unsigned, Gmail and Yahoo ignore them (or the message).
    const std::string from_domain = TemplateFromDomain(h);
    if (from_domain.empty()) {
      return absl::InvalidArgumentError(
          "unsubscribe_url: one-click unsubscribe needs a DKIM signature aligned with the "
          "From domain, and the message has no From field whose domain is written out");
    }
    if (!h.dkim) {
      return absl::InvalidArgumentError(
          "unsubscribe_url: one-click unsubscribe (RFC 8058) needs a DKIM signature over "
          "List-Unsubscribe, but the job turns signing off (\"dkim\": false)");
    }
    if (DkimDomainFor(from_domain).empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "unsubscribe_url: one-click unsubscribe (RFC 8058) needs a DKIM signature over "
          "List-Unsubscribe, but no [[dkim]] key signs for the From domain ",
          from_domain));
    }
  }
  return absl::OkStatus();
}

Composer::Composer(const Credentials& credentials)
    : credentials_(&credentials), rng_(std::random_device{}()) {
  LoadSigners();
}

void Composer::LoadSigners() {
  signers_.clear();
  for (const Credentials::DkimKey& k : credentials_->dkim_) {
    // Load() parsed this PEM already; a second parse cannot fail.
    absl::StatusOr<dkim::PrivateKey> key = dkim::PrivateKey::FromPem(k.pem);
    VOLLEY_CHECK(key.ok(), "a DKIM key that parsed at load no longer parses");
    signers_.emplace_back(k.options, *std::move(key));
  }
}

void Composer::SetCredentials(const Credentials& credentials) {
  credentials_ = &credentials;
  LoadSigners();
  // Every plan's indices now point into a set that is gone.
  ++keys_generation_;
}

std::vector<size_t> Composer::SignersFor(std::string_view from_domain) const {
  std::vector<size_t> out;
  if (from_domain.empty()) return out;
  const std::string_view domain = credentials_->DkimDomainFor(from_domain);
  if (domain.empty()) return out;
  for (size_t i = 0; i < credentials_->dkim_.size(); ++i) {
    if (credentials_->dkim_[i].config.domain == domain) out.push_back(i);
  }
  return out;
}

std::unique_ptr<JobPlan> Composer::Plan(const queue::JobHeader& h, const queue::Template& t,
                                        uint32_t job_no) const {
  auto plan = std::make_unique<JobPlan>();
  plan->job_no = job_no;
  plan->message_id_left = IsDotAtomText(h.id) ? h.id : absl::StrCat("j", job_no);
  plan->add_message_id = h.add_message_id && !queue::HasHeaderField(h, t, "message-id");
  plan->add_date = h.add_date && !queue::HasHeaderField(h, t, "date");
  plan->verp = !credentials_->verp_domain_.empty() && h.return_path.empty();
  plan->uses_token = queue::UsesUnsubscribeToken(h, t);
  const queue::TemplateField* from = t.FindHeader("from");
  plan->from_fixed = from == nullptr || !from->has_placeholders;
  const std::string from_domain = TemplateFromDomain(h);
  plan->message_id_domain =
      from_domain.empty() ? absl::AsciiStrToLower(base::Sv(queue::DomainOf(h.from))) : from_domain;
  plan->shared_body = !t.body_has_placeholders();
  plan->fields_in_smtp_form = FieldsInSmtpForm(h, *plan);
  PlanSigners(*plan, h);
  return plan;
}

void Composer::PlanSigners(JobPlan& plan, const queue::JobHeader& h) const {
  plan.signers.clear();
  plan.sign = false;
  if (h.dkim && !signers_.empty()) {
    if (plan.from_fixed) {
      plan.signers = SignersFor(TemplateFromDomain(h));
      plan.sign = !plan.signers.empty();
    } else {
      plan.sign = true;  // found per message
    }
  }
  // Cached body hashes belong to the signers they were made for.
  plan.body_hash.assign(plan.signers.size(), {});
  plan.keys_generation = keys_generation_;
}

std::string_view Composer::DateOf(absl::Time now) {
  const int64_t second = absl::ToUnixSeconds(now);
  if (second != date_second_) {
    date_second_ = second;
    date_ = FormatRfc5322Date(absl::FromUnixSeconds(second));
  }
  return date_;
}

void Composer::Compose(JobPlan& plan, const queue::JobHeader& h, const queue::Template& t,
                       const queue::Recipient& r, uint32_t line, absl::Time now,
                       const smtp::Capabilities& caps, smtp::Envelope* env,
                       smtp::ContentForm form) {
  // Planned with a signer set SetCredentials has replaced: its indices would name
  // other keys, or none.
  if (plan.keys_generation != keys_generation_) PlanSigners(plan, h);
  const token::Keyring& keys = credentials_->tokens_;
  std::string token;
  if (plan.uses_token && !keys.empty()) {
    token = token::Issue(keys, token::Purpose::kUnsubscribe, plan.job_no, line);
  }
  if (!h.return_path.empty()) {
    env->mail_from = queue::RenderReturnPath(h, r);
  } else if (plan.verp) {
    env->mail_from = token::VerpAddress(keys, credentials_->verp_domain_, plan.job_no, line);
  } else {
    env->mail_from = h.from;
  }

  std::string message_id;
  if (plan.add_message_id) {
    // job.line makes it unique within this sender; the random part keeps it unique
    // when a job id is used again on another volleyd or after the queue is reset.
    // "<left>.<line>.<12 hex digits>@<domain>", appended by hand: StrFormat's
    // parsing of the format was a tenth of a message's preparation.
    static constexpr char kHex[] = "0123456789abcdef";
    const uint64_t random = rng_() & 0xffffffffffffULL;
    char hex[12];
    for (int i = 0; i < 12; ++i) hex[i] = kHex[(random >> (4 * (11 - i))) & 0xf];
    const absl::AlphaNum line_digits(line);
    message_id.reserve(plan.message_id_left.size() + plan.message_id_domain.size() + 26);
    message_id.append(plan.message_id_left);
    message_id.push_back('.');
    message_id.append(line_digits.data(), line_digits.size());
    message_id.push_back('.');
    message_id.append(hex, sizeof hex);
    message_id.push_back('@');
    message_id.append(plan.message_id_domain);
  }
  // Only when the message is one recipient's: a shared message has no one
  // recipient to name.
  std::string trace;
  if (plan.per_recipient() && !keys.empty()) {
    trace = token::Issue(keys, token::Purpose::kTrace, plan.job_no, line);
  }
  queue::AddedFields added;
  added.message_id = message_id;
  added.trace = trace;
  if (plan.add_date) added.date = DateOf(now);
  added.unsubscribe_token = token;

  // The client makes the same decision (smtp::TakesEightBit) and refuses (5.6.3)
  // what cannot be converted; converted here, before signing, it finds 7 bits.
  const bool takes_eight_bit = smtp::TakesEightBit(caps, smtp::IsUtf8Envelope(*env));
  env->form = smtp::ContentForm::kMessage;
  env->eight_bit = false;
  env->message_size = 0;
  bool eight_bit = false;
  bool prepared = false;  // env->content is in SMTP form, eight_bit known
  size_t dots_added = 0;
  if (form != smtp::ContentForm::kMessage && plan.fields_in_smtp_form) {
    // Dot-stuffed while rendered, unless a signature must first be computed over
    // the message as received, or the message may have to be converted.
    const bool stuff = form == smtp::ContentForm::kData && !plan.sign && takes_eight_bit;
    std::string& out = env->content;
    out.clear();
    out.reserve(queue::RenderedSizeHint(h, t) + (stuff ? 3 : 0));
    queue::AppendAddedFields(h, r, added, &out);
    const bool fields_eight_bit = base::HasEightBit(out);
    queue::Builtins builtins;
    builtins.unsubscribe_token = token;
    queue::RenderFacts facts;
    t.Render(r, builtins, stuff ? queue::LineStart::kDotStuffed : queue::LineStart::kAsIs, &out,
             &facts);
    if (!facts.line_break_in_value) {
      prepared = true;
      eight_bit = fields_eight_bit || facts.eight_bit;
      dots_added = facts.dots_added;
      if (stuff) {
        // Stuffed and signed by nobody: the message as DATA sends it.
        env->message_size = out.size() - dots_added;
        out.append(".\r\n");
        env->form = smtp::ContentForm::kData;
        env->eight_bit = eight_bit;
        return;
      }
    }
  }
  if (!prepared) {
    env->content = queue::RenderMessage(h, t, r, added);
    // Only the downgrade below needs to know: the client scans a kMessage itself.
    eight_bit = !takes_eight_bit && smtp::HasEightBit(env->content);
  }

  bool downgraded = false;
  if (!takes_eight_bit && eight_bit) {
    absl::StatusOr<std::string> seven_bit = smtp::DowngradeTo7Bit(env->content);
    if (!seven_bit.ok()) return;  // not sent at all: nothing to sign
    env->content = *std::move(seven_bit);
    downgraded = true;
    prepared = false;  // the client prepares the converted message
  }

  if (plan.sign) Sign(plan, now, downgraded, env);

  // Here env->content is a message: in SMTP form (every line ending CRLF, as
  // rendered) when `prepared`, and signatures kept it so (they are 7-bit fields
  // ending in CRLF).
  if (!prepared || form == smtp::ContentForm::kMessage) return;
  env->eight_bit = eight_bit;
  if (form == smtp::ContentForm::kBdat) {
    env->form = smtp::ContentForm::kBdat;
    env->message_size = env->content.size();
  } else {
    uint64_t size = 0;
    env->content = smtp::PrepareData(env->content, &size);
    env->form = smtp::ContentForm::kData;
    env->message_size = size;
  }
}

void Composer::Sign(JobPlan& plan, absl::Time now, bool downgraded, smtp::Envelope* env) {
  std::vector<size_t> per_message;
  const std::vector<size_t>* signers = &plan.signers;
  if (!plan.from_fixed) {
    per_message = SignersFor(dkim::FromDomain(env->content));
    signers = &per_message;
  }
  std::string signatures;
  // Signers with the same body canonicalisation share one body hash per message
  // (dual signing hashes a 100 KiB body once, not twice), and per job when the body
  // is the same for every recipient.
  std::string body_hashes[2];  // by body canonicalisation: simple, relaxed
  for (size_t i = 0; i < signers->size(); ++i) {
    const dkim::Signer& signer = signers_[(*signers)[i]];
    const bool relaxed = signer.options().body_canon == dkim::Canon::kRelaxed;
    std::string& body_hash = body_hashes[relaxed ? 1 : 0];
    if (body_hash.empty() && plan.from_fixed && plan.shared_body) {
      std::string& cached = plan.body_hash[i][downgraded ? 1 : 0];
      if (cached.empty()) cached = signer.BodyHash(env->content);
      body_hash = cached;
    }
    if (body_hash.empty()) body_hash = signer.BodyHash(env->content);
    absl::StatusOr<std::string> field = signer.Sign(env->content, now, body_hash);
    if (!field.ok()) {
      if (plan.sign_error.empty()) plan.sign_error = std::string(field.status().message());
      continue;
    }
    signatures.append(*field);
  }
  if (!signatures.empty()) env->content.insert(0, signatures);
}

}  // namespace volley::engine
