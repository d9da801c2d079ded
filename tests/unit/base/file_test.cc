#include "base/file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace volley::base {
namespace {

namespace fs = std::filesystem;

TEST(WriteFileAtomically, WritesTheWholeFileAndLeavesNoTemporary) {
  const fs::path dir = fs::temp_directory_path() / ("volley-file-test-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "stats.json").string();
  const std::string text(100000, 'x');
  ASSERT_TRUE(WriteFileAtomically(path, text).ok());
  ASSERT_TRUE(WriteFileAtomically(path, "second").ok());  // replaces it
  std::ifstream in(path);
  std::stringstream got;
  got << in.rdbuf();
  EXPECT_EQ(got.str(), "second");
  EXPECT_FALSE(fs::exists(path + ".tmp"));
  fs::remove_all(dir);
}

TEST(WriteAll, AFullDiskIsResourceExhaustedAndNamesTheFile) {
  const int fd = ::open("/dev/full", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0) << "no /dev/full here";
  size_t written = 123;
  const absl::Status st = WriteAll(fd, "hello", "/dev/full", &written);
  ::close(fd);
  EXPECT_TRUE(absl::IsResourceExhausted(st)) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::StartsWith("/dev/full: write: "));
  EXPECT_EQ(written, 0u);
}

TEST(ErrnoError, OtherErrorsAreUnavailable) {
  errno = EACCES;
  const absl::Status st = ErrnoError("spool/x", "open");
  EXPECT_TRUE(absl::IsUnavailable(st)) << st;
  EXPECT_THAT(std::string(st.message()), ::testing::StartsWith("spool/x: open: "));
}

}  // namespace
}  // namespace volley::base
