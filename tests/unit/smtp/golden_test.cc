// golden_test.cc - replay tests/golden/smtp/*.txt through smtp::Client.
//
// Each transcript (format in transcript.h) must hold when the server's bytes arrive
// whole, one byte at a time, and split in two at every offset of every block.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "transcript.h"

#ifndef VOLLEY_GOLDEN_DIR
#error "VOLLEY_GOLDEN_DIR must name tests/golden/smtp"
#endif

namespace volley::smtp {
namespace {

std::vector<std::filesystem::path> Transcripts() {
  std::vector<std::filesystem::path> paths;
  for (const auto& entry : std::filesystem::directory_iterator(VOLLEY_GOLDEN_DIR)) {
    if (entry.path().extension() == ".txt") paths.push_back(entry.path());
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(GoldenTranscripts, AtLeastFiveArePresent) {
  EXPECT_GE(Transcripts().size(), 5u) << "in " << VOLLEY_GOLDEN_DIR;
}

TEST(GoldenTranscripts, ReplayWhole) {
  for (const auto& path : Transcripts()) {
    EXPECT_EQ(ReplayTranscript(ReadFile(path), FeedMode::Whole()), "") << path;
  }
}

TEST(GoldenTranscripts, ReplayOneByteAtATime) {
  for (const auto& path : Transcripts()) {
    EXPECT_EQ(ReplayTranscript(ReadFile(path), FeedMode::Byte()), "") << path;
  }
}

TEST(GoldenTranscripts, ReplaySplitAtEveryOffset) {
  for (const auto& path : Transcripts()) {
    std::string text = ReadFile(path);
    for (size_t at = 0; at <= LongestServerBlock(text); ++at) {
      std::string err = ReplayTranscript(text, FeedMode::Split(at));
      ASSERT_EQ(err, "") << path << " split at " << at;
    }
  }
}

}  // namespace
}  // namespace volley::smtp
