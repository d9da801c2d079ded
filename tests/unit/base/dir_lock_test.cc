// dir_lock_test - the exclusive folder lock (base/dir_lock.h) on a real folder:
// a second holder is refused and told who holds it, and the lock goes with its
// holder, including a holder killed with SIGKILL.
#include "base/dir_lock.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::base {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

class DirLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("volley-dir-lock-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string dir() const { return (dir_ / "spool").string(); }
  fs::path dir_;
};

TEST_F(DirLockTest, ASecondHolderIsRefusedAndNamesTheFirst) {
  auto first = DirLock::Acquire(dir(), "spool", "volleyd");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->path(), dir() + "/volleyd.lock");
  auto second = DirLock::Acquire(dir(), "spool", "volleyd");
  ASSERT_FALSE(second.ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(second.status())) << second.status();
  char host[256] = {};
  ASSERT_EQ(::gethostname(host, sizeof host - 1), 0);
  EXPECT_EQ(second.status().message(),
            absl::StrCat("spool ", dir(), " is in use by volleyd pid ", ::getpid(), " on host ",
                         host, " (lock ", dir(), "/volleyd.lock, released when that process "
                         "exits)"));
}

TEST_F(DirLockTest, TheLockGoesWithItsHolder) {
  {
    auto first = DirLock::Acquire(dir(), "spool", "volleyd");
    ASSERT_TRUE(first.ok()) << first.status();
    DirLock moved = *std::move(first);  // the lock moves with the object
    EXPECT_FALSE(DirLock::Acquire(dir(), "spool", "volleyd").ok());
  }
  // The file stays behind, and means nothing once its holder is gone.
  EXPECT_TRUE(fs::exists(dir() + "/volleyd.lock"));
  EXPECT_TRUE(DirLock::Acquire(dir(), "spool", "volleyd").ok());
}

TEST_F(DirLockTest, AHolderKilledWithSigkillLeavesNoStaleLock) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    auto lock = DirLock::Acquire(dir(), "spool", "volleyd");
    const char ok = lock.ok() ? '1' : '0';
    (void)!::write(ready[1], &ok, 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(ok, '1');
  auto refused = DirLock::Acquire(dir(), "spool", "volleyd");
  ASSERT_FALSE(refused.ok());
  EXPECT_THAT(refused.status().message(), HasSubstr(absl::StrCat("volleyd pid ", child, " on host")));
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  auto after = DirLock::Acquire(dir(), "spool", "volleyd");
  EXPECT_TRUE(after.ok()) << after.status();
}

TEST_F(DirLockTest, ASymlinkedLockFileIsNotFollowed) {
  fs::create_directories(dir());
  const fs::path target = dir_ / "elsewhere";
  std::ofstream(target) << "keep\n";
  fs::create_symlink(target, dir() + "/volleyd.lock");
  auto lock = DirLock::Acquire(dir(), "spool", "volleyd");
  EXPECT_FALSE(lock.ok());
  EXPECT_THAT(lock.status().message(), HasSubstr(dir() + "/volleyd.lock: open"));
  std::ifstream in(target);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), "keep\n");
}

}  // namespace
}  // namespace volley::base
