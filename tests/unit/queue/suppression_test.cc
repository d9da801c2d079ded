// The suppression list on a real RocksDB in a temporary folder.
#include "queue/suppression.h"

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::queue {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

const absl::Time kT0 = absl::FromUnixSeconds(1'800'000'000);

Suppression Entry(std::string address, std::string scope = "",
                  SuppressionReason reason = SuppressionReason::kManual) {
  Suppression e;
  e.address = std::move(address);
  e.scope = std::move(scope);
  e.reason = reason;
  e.source = "test";
  e.added = kT0;
  return e;
}

class SuppressionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("volley-suppression-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    Reopen();
  }
  void TearDown() override {
    list_.reset();
    fs::remove_all(dir_);
  }
  void Reopen(SuppressionOptions options = {}) {
    list_.reset();
    auto list = SuppressionList::Open(dir_.string(), options);
    ASSERT_TRUE(list.ok()) << list.status();
    list_ = *std::move(list);
  }
  // Checked - the reason rcpt is suppressed for, or "" when it is not.
  std::string Checked(std::string_view rcpt, std::string_view from_domain = "",
                      absl::Time now = kT0) {
    auto hit = list_->Check(rcpt, from_domain, now);
    EXPECT_TRUE(hit.ok()) << hit.status();
    if (!hit.ok() || !hit->has_value()) return "";
    return std::string(SuppressionReasonName((*hit)->reason));
  }

  fs::path dir_;
  std::unique_ptr<SuppressionList> list_;
};

TEST(SuppressionReasonTest, NamesRoundTrip) {
  for (int r = 1; r <= 5; ++r) {
    const auto reason = static_cast<SuppressionReason>(r);
    auto parsed = ParseSuppressionReason(SuppressionReasonName(reason));
    ASSERT_TRUE(parsed.ok()) << parsed.status();
    EXPECT_EQ(*parsed, reason);
  }
  EXPECT_EQ(SuppressionReasonName(SuppressionReason::kHardBounce), "hard_bounce");
  auto bad = ParseSuppressionReason("Complaint");
  EXPECT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("reason: unknown \"Complaint\""));
}

// Check takes input already in normal form as it is and normalises the rest:
// the answers are the same either way, and bad input is refused either way.
TEST_F(SuppressionTest, CheckAnswersTheSameForNormalAndOtherInput) {
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "", SuppressionReason::kComplaint)).ok());
  ASSERT_TRUE(list_->Add(Entry("@blocked.test", "brand.test", SuppressionReason::kManual)).ok());
  EXPECT_EQ(Checked("ann@example.test"), "complaint");
  EXPECT_EQ(Checked("Ann@Example.TEST"), "complaint");
  EXPECT_EQ(Checked("ANN@EXAMPLE.TEST", "Brand.Test"), "complaint");
  EXPECT_EQ(Checked("zoe@blocked.test", "brand.test"), "manual");
  EXPECT_EQ(Checked("Zoe@Blocked.Test", "BRAND.test"), "manual");
  EXPECT_EQ(Checked("zoe@blocked.test", "other.test"), "");
  EXPECT_EQ(Checked("@blocked.test", "brand.test"), "manual");
  EXPECT_EQ(Checked("x@y@blocked.test", "brand.test"), "manual");  // the last '@' counts
  EXPECT_EQ(Checked("caf\xc3\xa9@example.test"), "");  // 8-bit octets pass as they are
  struct Bad {
    std::string rcpt;
    std::string scope;
    std::string want;
  };
  const std::vector<Bad> bad = {
      {"", "", "address: empty"},
      {"no-at-sign", "", "address: not an address"},
      {"ann@", "", "address: not an address"},
      {"ann@exa mple.test", "", "space in the domain"},
      {"Ann@Exa mple.test", "", "space in the domain"},
      {"ann@example.test\n", "", "control character"},
      {std::string(kMaxSuppressionAddress + 1, 'a') + "@x", "", "longer than"},
      {"ann@example.test", "brand@test", "scope: not a domain"},
      {"ann@example.test", "Brand Test", "scope: not a domain"},
  };
  for (const Bad& b : bad) {
    auto hit = list_->Check(b.rcpt, b.scope, kT0);
    EXPECT_TRUE(absl::IsInvalidArgument(hit.status())) << b.rcpt << " / " << b.scope;
    EXPECT_THAT(hit.status().message(), HasSubstr(b.want)) << b.rcpt << " / " << b.scope;
  }
}

TEST_F(SuppressionTest, AddCheckRemove) {
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "", SuppressionReason::kComplaint)).ok());
  EXPECT_EQ(Checked("ann@example.test"), "complaint");
  EXPECT_EQ(Checked("bob@example.test"), "");
  EXPECT_EQ(Checked("ann@example.test.other"), "");

  auto hit = list_->Check("ann@example.test", "", kT0);
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->address, "ann@example.test");
  EXPECT_EQ((*hit)->source, "test");
  EXPECT_EQ((*hit)->added, kT0);
  EXPECT_EQ((*hit)->expires, absl::InfiniteFuture());

  auto removed = list_->Remove("ann@example.test", "");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_TRUE(*removed);
  EXPECT_EQ(Checked("ann@example.test"), "");
  removed = list_->Remove("ann@example.test", "");
  ASSERT_TRUE(removed.ok());
  EXPECT_FALSE(*removed);
}

TEST_F(SuppressionTest, AddReplacesTheSameAddressAndScope) {
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "", SuppressionReason::kSoftBounce)).ok());
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "", SuppressionReason::kUnsubscribe)).ok());
  EXPECT_EQ(Checked("ann@example.test"), "unsubscribe");
  std::vector<Suppression> all;
  ASSERT_TRUE(list_->List("", "", 100, &all).ok());
  EXPECT_EQ(all.size(), 1u);
}

TEST_F(SuppressionTest, DomainEntrySuppressesEveryAddressAtThatDomainOnly) {
  ASSERT_TRUE(list_->Add(Entry("@Example.TEST")).ok());
  EXPECT_EQ(Checked("anyone@example.test"), "manual");
  EXPECT_EQ(Checked("Other@EXAMPLE.test"), "manual");
  EXPECT_EQ(Checked("x@sub.example.test"), "");  // subdomains are not covered
  EXPECT_EQ(Checked("x@example.test2"), "");
  EXPECT_EQ(Checked("@example.test"), "manual");
}

TEST_F(SuppressionTest, CaseInsensitiveWholeAddress) {
  ASSERT_TRUE(list_->Add(Entry("Ann.Lee@Example.Test")).ok());
  EXPECT_EQ(Checked("ann.lee@example.test"), "manual");
  EXPECT_EQ(Checked("ANN.LEE@EXAMPLE.TEST"), "manual");
  std::vector<Suppression> all;
  ASSERT_TRUE(list_->List("", "", 10, &all).ok());
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].address, "ann.lee@example.test");
  auto removed = list_->Remove("ANN.LEE@example.test", "");
  ASSERT_TRUE(removed.ok());
  EXPECT_TRUE(*removed);
}

TEST_F(SuppressionTest, ScopeRules) {
  // Scoped to brand-a.test: only mail from that domain is suppressed.
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "Brand-A.test", SuppressionReason::kUnsubscribe)).ok());
  EXPECT_EQ(Checked("ann@example.test", "brand-a.test"), "unsubscribe");
  EXPECT_EQ(Checked("ann@example.test", "BRAND-A.TEST"), "unsubscribe");
  EXPECT_EQ(Checked("ann@example.test", "brand-b.test"), "");
  EXPECT_EQ(Checked("ann@example.test", ""), "");
  // A global entry applies whatever the From domain; the scoped one is more
  // specific and is answered first.
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "", SuppressionReason::kComplaint)).ok());
  EXPECT_EQ(Checked("ann@example.test", "brand-b.test"), "complaint");
  EXPECT_EQ(Checked("ann@example.test", "brand-a.test"), "unsubscribe");
  // A domain entry in a scope.
  ASSERT_TRUE(list_->Add(Entry("@other.test", "brand-b.test")).ok());
  EXPECT_EQ(Checked("x@other.test", "brand-b.test"), "manual");
  EXPECT_EQ(Checked("x@other.test", "brand-a.test"), "");
  // Removing one scope leaves the other.
  ASSERT_TRUE(*list_->Remove("ann@example.test", "brand-a.test"));
  EXPECT_EQ(Checked("ann@example.test", "brand-a.test"), "complaint");
}

TEST_F(SuppressionTest, ScopeForFollowsThePolicy) {
  EXPECT_EQ(list_->ScopeFor("Brand.test"), "");
  SuppressionOptions o;
  o.scope = SuppressionScope::kFromDomain;
  Reopen(o);
  EXPECT_EQ(list_->ScopeFor("Brand.test"), "brand.test");
}

// SetPolicy (a reload) changes the soft-bounce fields and the scope from the
// next call on, keeps the storage fields Open's, and refuses what Open refuses.
TEST_F(SuppressionTest, SetPolicyAppliesFromTheNextCall) {
  SuppressionOptions next;
  next.soft_bounce_limit = 1;
  next.soft_bounce_window = absl::Hours(1);
  next.soft_bounce_expiry = absl::Hours(2);
  next.scope = SuppressionScope::kFromDomain;
  next.filter_bits_per_key = 3;  // restart-only: ignored
  ASSERT_TRUE(list_->SetPolicy(next).ok());
  EXPECT_EQ(list_->Policy()->soft_bounce_limit, 1);
  EXPECT_EQ(list_->Policy()->filter_bits_per_key, 10);
  EXPECT_EQ(list_->options().soft_bounce_limit, 3);  // Open's
  EXPECT_EQ(list_->ScopeFor("Brand.test"), "brand.test");
  auto r = list_->RecordSoftBounce("ann@example.test", "brand.test", kT0, "dsn");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(*r);  // one of limit 1
  auto hit = list_->Check("ann@example.test", "brand.test", kT0);
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->scope, "brand.test");
  EXPECT_EQ((*hit)->expires, kT0 + absl::Hours(2));

  SuppressionOptions bad = next;
  bad.soft_bounce_limit = 0;
  EXPECT_FALSE(list_->SetPolicy(bad).ok());
  bad = next;
  bad.soft_bounce_window = absl::ZeroDuration();
  EXPECT_FALSE(list_->SetPolicy(bad).ok());
  EXPECT_EQ(list_->Policy()->soft_bounce_limit, 1);  // kept
  EXPECT_EQ(list_->Policy()->soft_bounce_window, absl::Hours(1));
}

TEST_F(SuppressionTest, ExpiredEntryDoesNotCount) {
  Suppression e = Entry("ann@example.test");
  e.expires = kT0 + absl::Hours(1);
  ASSERT_TRUE(list_->Add(e).ok());
  EXPECT_EQ(Checked("ann@example.test", "", kT0), "manual");
  EXPECT_EQ(Checked("ann@example.test", "", kT0 + absl::Minutes(59)), "manual");
  EXPECT_EQ(Checked("ann@example.test", "", kT0 + absl::Hours(1)), "");
  // An expired scoped entry does not hide a live domain entry behind it.
  Suppression scoped = Entry("bob@example.test", "brand.test");
  scoped.expires = kT0;
  ASSERT_TRUE(list_->Add(scoped).ok());
  ASSERT_TRUE(list_->Add(Entry("@example.test", "", SuppressionReason::kHardBounce)).ok());
  EXPECT_EQ(Checked("bob@example.test", "brand.test", kT0 + absl::Seconds(1)), "hard_bounce");
}

TEST_F(SuppressionTest, SoftBouncesCountWithinTheWindow) {
  // Defaults: 3 within 7 days make an entry that expires 30 days later.
  auto r = list_->RecordSoftBounce("Ann@example.test", "brand.test", kT0, "dsn 4.2.2 #1");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(*r);
  // The second comes 8 days later: the first is out of the window.
  r = list_->RecordSoftBounce("ann@example.test", "brand.test", kT0 + absl::Hours(24 * 8), "#2");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  r = list_->RecordSoftBounce("ann@example.test", "brand.test", kT0 + absl::Hours(24 * 9), "#3");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r) << "only two within the window";
  EXPECT_EQ(Checked("ann@example.test", "brand.test", kT0 + absl::Hours(24 * 9)), "");
  const absl::Time third = kT0 + absl::Hours(24 * 10);
  r = list_->RecordSoftBounce("ann@example.test", "brand.test", third, "dsn 4.2.2 #4");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
  // Global scope (the default policy), whatever the From domain.
  auto hit = list_->Check("ann@example.test", "elsewhere.test", third);
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->reason, SuppressionReason::kSoftBounce);
  EXPECT_EQ((*hit)->scope, "");
  EXPECT_EQ((*hit)->source, "dsn 4.2.2 #4");
  EXPECT_EQ((*hit)->expires, third + absl::Hours(24 * 30));
  EXPECT_EQ(Checked("ann@example.test", "", third + absl::Hours(24 * 30)), "");
  // Suppressed already: counting changes nothing.
  r = list_->RecordSoftBounce("ann@example.test", "", third + absl::Hours(1), "#5");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
}

TEST_F(SuppressionTest, SoftBounceNeverWeakensAPermanentEntry) {
  SuppressionOptions o;
  o.soft_bounce_limit = 1;
  Reopen(o);
  ASSERT_TRUE(list_->Add(Entry("ann@example.test", "", SuppressionReason::kComplaint)).ok());
  auto r = list_->RecordSoftBounce("ann@example.test", "", kT0, "dsn");
  ASSERT_TRUE(r.ok());
  EXPECT_FALSE(*r);
  auto hit = list_->Check("ann@example.test", "", kT0 + absl::Hours(24 * 365));
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->reason, SuppressionReason::kComplaint);
}

TEST_F(SuppressionTest, SoftBounceScopePerFromDomainPolicy) {
  SuppressionOptions o;
  o.scope = SuppressionScope::kFromDomain;
  o.soft_bounce_limit = 2;
  Reopen(o);
  ASSERT_FALSE(*list_->RecordSoftBounce("ann@example.test", "a.test", kT0, "1"));
  // Another From domain counts apart.
  ASSERT_FALSE(*list_->RecordSoftBounce("ann@example.test", "b.test", kT0, "1"));
  ASSERT_TRUE(*list_->RecordSoftBounce("ann@example.test", "A.test", kT0 + absl::Hours(1), "2"));
  EXPECT_EQ(Checked("ann@example.test", "a.test", kT0 + absl::Hours(1)), "soft_bounce");
  EXPECT_EQ(Checked("ann@example.test", "b.test", kT0 + absl::Hours(1)), "");
}

TEST_F(SuppressionTest, PersistsAcrossReopen) {
  Suppression e = Entry("ann@example.test", "brand.test", SuppressionReason::kUnsubscribe);
  e.source = "job spring-sale line 3";
  e.expires = kT0 + absl::Hours(48);
  ASSERT_TRUE(list_->Add(e).ok());
  ASSERT_TRUE(list_->Add(Entry("@blocked.test")).ok());
  ASSERT_FALSE(*list_->RecordSoftBounce("bob@example.test", "", kT0, "1"));
  ASSERT_FALSE(*list_->RecordSoftBounce("bob@example.test", "", kT0, "2"));
  Reopen();
  auto hit = list_->Check("ann@example.test", "brand.test", kT0);
  ASSERT_TRUE(hit.ok() && hit->has_value());
  EXPECT_EQ((*hit)->source, "job spring-sale line 3");
  EXPECT_EQ((*hit)->expires, kT0 + absl::Hours(48));
  EXPECT_EQ(Checked("z@blocked.test"), "manual");
  // The counter survived too: the third soft bounce makes the entry.
  auto r = list_->RecordSoftBounce("bob@example.test", "", kT0, "3");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(*r);
}

TEST_F(SuppressionTest, ListPagesInKeyOrder) {
  std::vector<Suppression> batch;
  for (const char* a : {"c@x.test", "a@x.test", "b@x.test", "@x.test"}) batch.push_back(Entry(a));
  batch.push_back(Entry("a@x.test", "brand.test"));
  ASSERT_TRUE(list_->AddBatch(batch).ok());
  std::vector<Suppression> page;
  ASSERT_TRUE(list_->List("", "", 2, &page).ok());
  ASSERT_EQ(page.size(), 2u);
  EXPECT_EQ(page[0].address, "@x.test");
  EXPECT_EQ(page[1].address, "a@x.test");
  EXPECT_EQ(page[1].scope, "");
  ASSERT_TRUE(list_->List(page[1].address, page[1].scope, 2, &page).ok());
  ASSERT_EQ(page.size(), 4u);
  EXPECT_EQ(page[2].address, "a@x.test");
  EXPECT_EQ(page[2].scope, "brand.test");
  EXPECT_EQ(page[3].address, "b@x.test");
  ASSERT_TRUE(list_->List(page[3].address, page[3].scope, 10, &page).ok());
  ASSERT_EQ(page.size(), 5u);
  EXPECT_EQ(page[4].address, "c@x.test");
  EXPECT_GT(list_->ApproximateCount(), 0u);
}

TEST_F(SuppressionTest, BadInputIsRefusedWithAClearError) {
  struct Case {
    std::string address;
    std::string scope;
    std::string source;
    std::string want;
  };
  const Case cases[] = {
      {"", "", "", "address: empty"},
      {"ann@example.test\r\nRCPT TO:<x@y>", "", "", "address: CR, LF"},
      {"ann\n@example.test", "", "", "address: CR, LF"},
      {std::string(300, 'a') + "@" + std::string(30, 'b'), "", "", "longer than 320 octets"},
      {"no-at-sign", "", "", "not an address"},
      {"ann@", "", "", "not an address"},
      {"@", "", "", "not an address"},
      {"ann@exa mple.test", "", "", "not an address"},
      {"ann@example.test", "brand@test", "", "scope: not a domain"},
      {"ann@example.test", std::string(256, 'd'), "", "scope: not a domain"},
      {"ann@example.test", "", "line\r\n", "source: CR, LF"},
      {"ann@example.test", "", std::string(513, 's'), "source: longer than 512"},
  };
  for (const Case& c : cases) {
    Suppression e = Entry(c.address, c.scope);
    e.source = c.source;
    absl::Status st = list_->Add(e);
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << c.address << ": " << st;
    EXPECT_THAT(st.message(), HasSubstr(c.want)) << c.address;
  }
  auto hit = list_->Check("bad\rline@example.test", "", kT0);
  EXPECT_TRUE(absl::IsInvalidArgument(hit.status()));
  // A batch with one bad entry writes nothing and names it.
  absl::Status st = list_->AddBatch({Entry("ok@example.test"), Entry("")});
  EXPECT_THAT(st.message(), HasSubstr("entry 1: address: empty"));
  EXPECT_EQ(Checked("ok@example.test"), "");
  std::vector<Suppression> all;
  ASSERT_TRUE(list_->List("", "", 10, &all).ok());
  EXPECT_TRUE(all.empty());
}

// The filter (FILTER): every entry, however it was added and after a reopen,
// is still found (no false negatives), and a miss is answered without RocksDB.
TEST_F(SuppressionTest, FilterNeverLosesAnEntryAndAnswersMissesWithoutRocksDb) {
  SuppressionOptions options;
  options.filter_min_keys = 64;  // small, so that the adds below rebuild it
  Reopen(options);
  std::vector<std::string> on_list;
  for (int i = 0; i < 300; ++i) {
    const std::string a = "Single" + std::to_string(i) + "@one.test";
    ASSERT_TRUE(list_->Add(Entry(a, i % 3 == 0 ? "brand.test" : "")).ok());
    on_list.push_back(a);
  }
  for (int b = 0; b < 10; ++b) {
    std::vector<Suppression> batch;
    for (int i = 0; i < 100; ++i) {
      const std::string a = "batch" + std::to_string(b * 100 + i) + "@two.test";
      batch.push_back(Entry(a));
      on_list.push_back(a);
    }
    ASSERT_TRUE(list_->AddBatch(batch).ok());
  }
  ASSERT_TRUE(list_->Add(Entry("@whole-domain.test")).ok());
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(list_->RecordSoftBounce("full@three.test", "", kT0, "dsn 4.2.2").ok());
  }
  on_list.push_back("full@three.test");
  auto all_found = [&](const char* when) {
    for (const std::string& a : on_list) {
      EXPECT_NE(Checked(a, "brand.test"), "") << a << " " << when;
    }
    EXPECT_EQ(Checked("anyone@whole-domain.test"), "manual") << when;
  };
  all_found("after the adds");

  // A miss reads RocksDB only on a false positive (about 1% at 10 bits per
  // key); without the filter each of these would be four reads.
  auto misses_read = [&]() {
    const uint64_t before = list_->FilterStats().store_reads;
    for (int i = 0; i < 1000; ++i) {
      EXPECT_EQ(Checked("nobody" + std::to_string(i) + "@four.test", "brand.test"), "");
    }
    return list_->FilterStats().store_reads - before;
  };
  EXPECT_LT(misses_read(), 100u);
  const SuppressionFilterStats stats = list_->FilterStats();
  EXPECT_GT(stats.bytes, 0u);
  EXPECT_GE(stats.keys, on_list.size());

  // Reopened: the filter is built from what is stored, sized for it.
  Reopen(options);
  all_found("after a reopen");
  EXPECT_LT(misses_read(), 100u);
  EXPECT_GE(list_->FilterStats().design_keys, on_list.size());
  EXPECT_EQ(list_->FilterStats().rebuilds, 0u);

  // Off: the same answers, every miss from RocksDB.
  options.filter_bits_per_key = 0;
  Reopen(options);
  all_found("with the filter off");
  EXPECT_EQ(list_->FilterStats().bytes, 0u);
  EXPECT_EQ(misses_read(), 4000u);
}

// Checks on other threads while a writer adds enough to rebuild the filter
// several times: an entry whose Add returned is found by every later Check.
TEST_F(SuppressionTest, FilterRebuildsWhileCheckedFromOtherThreads) {
  SuppressionOptions options;
  options.filter_min_keys = 16;
  options.sync_writes = false;
  Reopen(options);
  constexpr int kEntries = 4000;
  std::atomic<int> added{0};
  std::atomic<int> lost{0};
  std::vector<std::thread> checkers;
  for (int t = 0; t < 2; ++t) {
    checkers.emplace_back([&] {
      while (added.load() < kEntries) {
        const int upto = added.load();  // Adds of entries below this have returned
        for (int i = std::max(0, upto - 50); i < upto; ++i) {
          auto hit = list_->Check("r" + std::to_string(i) + "@rebuild.test", "", kT0);
          if (!hit.ok() || !hit->has_value()) lost.fetch_add(1);
        }
      }
    });
  }
  for (int i = 0; i < kEntries; ++i) {
    ASSERT_TRUE(list_->Add(Entry("r" + std::to_string(i) + "@rebuild.test")).ok());
    added.store(i + 1);
  }
  for (std::thread& t : checkers) t.join();
  EXPECT_EQ(lost.load(), 0);
  for (int i = 0; i < kEntries; ++i) {
    EXPECT_NE(Checked("r" + std::to_string(i) + "@rebuild.test"), "") << i;
  }
  // Rebuilds run on their own thread; at 4000 entries from a design of 16 at
  // least the first has finished by now or is running. The count only grows.
  const SuppressionFilterStats stats = list_->FilterStats();
  EXPECT_GE(stats.keys, static_cast<uint64_t>(kEntries) / 2);
}

TEST_F(SuppressionTest, OpenFailsClearlyOnAnUnusablePath) {
  // The same folder open twice: RocksDB's lock refuses the second.
  auto second = SuppressionList::Open(dir_.string(), SuppressionOptions{});
  ASSERT_FALSE(second.ok());
  EXPECT_THAT(second.status().message(), HasSubstr("cannot open the suppression list"));
  EXPECT_THAT(second.status().message(), HasSubstr(dir_.string()));
}

}  // namespace
}  // namespace volley::queue
