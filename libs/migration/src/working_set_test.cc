#include "migration/working_set.h"

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <string>
#include <vector>

#include "migration/snapshot.pb.h"

using namespace migration;
using Pages = std::vector<uint64_t>;

namespace {

std::string Bytes(uint32_t version, uint64_t ram_pages, const Pages& runs) {
  ::kindling::migration::v1::WorkingSet ws;
  ws.set_format_version(version);
  ws.set_ram_pages(ram_pages);
  for (uint64_t r : runs) ws.add_runs(r);
  return ws.SerializeAsString();
}

std::string Refusal(std::string_view bytes, uint64_t ram_pages) {
  auto r = DecodeWorkingSet(bytes, ram_pages);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(r.status().message());
}

}  // namespace

TEST_CASE("A working set keeps its pages in order, consecutive ones as runs") {
  Pages pages = {5, 6, 7, 100, 3, 4};
  std::string bytes = EncodeWorkingSet(pages, 128);
  ::kindling::migration::v1::WorkingSet ws;
  REQUIRE(ws.ParseFromString(bytes));
  CHECK(ws.runs_size() == 6);  // (5, 3) (100, 1) (3, 2)
  auto back = DecodeWorkingSet(bytes, 128);
  REQUIRE(back.ok());
  CHECK(*back == pages);
  CHECK(DecodeWorkingSet(EncodeWorkingSet({}, 128), 128)->empty());
}

TEST_CASE("A working set that does not fit its snapshot is refused, naming why") {
  CHECK(Refusal("\xff\xff\xff", 128).find("not a WorkingSet") != std::string::npos);
  CHECK(Refusal(Bytes(2, 128, {1, 1}), 128).find("format version 2") != std::string::npos);
  CHECK(Refusal(Bytes(1, 64, {1, 1}), 128).find("for 64 pages of RAM") != std::string::npos);
  CHECK(Refusal(Bytes(1, 128, {1, 1, 2}), 128).find("odd number") != std::string::npos);
  CHECK(Refusal(Bytes(1, 128, {1, 0}), 128).find("run 0 has no pages") != std::string::npos);
  CHECK(Refusal(Bytes(1, 128, {120, 9}), 128).find("past the RAM's 128") != std::string::npos);
  CHECK(Refusal(Bytes(1, 128, {128, 1}), 128).find("past the RAM") != std::string::npos);
  CHECK(Refusal(Bytes(1, 128, {1, ~0ull}), 128).find("past the RAM") != std::string::npos);
  // Each run in range, but together more pages than the RAM has.
  CHECK(Refusal(Bytes(1, 128, {0, 100, 0, 100}), 128).find("more pages than") !=
        std::string::npos);
  CHECK(Refusal(std::string(kMaxWorkingSetBytes + 1, '\0'), 128).find("more than") !=
        std::string::npos);
}

TEST_CASE("Merged working sets put the newer pages first, each page once") {
  CHECK(MergeWorkingSets(Pages{3, 1, 3}, Pages{1, 2, 9999}, 100) == Pages{3, 1, 2});
  CHECK(MergeWorkingSets(Pages{}, Pages{7}, 100) == Pages{7});
}

TEST_CASE("A working set file is written whole and read back; none is NOT_FOUND") {
  char dir[] = "/tmp/working_set_testXXXXXX";
  REQUIRE(::mkdtemp(dir) != nullptr);
  std::string d = dir;
  CHECK(ReadWorkingSet(d, 64).status().code() == absl::StatusCode::kNotFound);
  REQUIRE(WriteWorkingSet(d, Pages{9, 10, 2}, 64).ok());
  auto back = ReadWorkingSet(d, 64);
  REQUIRE(back.ok());
  CHECK(*back == Pages{9, 10, 2});
  auto other = ReadWorkingSet(d, 32);  // another snapshot's RAM size
  REQUIRE_FALSE(other.ok());
  CHECK(std::string(other.status().message()).find(d + "/working-set: working set: for 64") !=
        std::string::npos);
  CHECK(::access((d + "/.working-set." + std::to_string(::getpid()) + ".tmp").c_str(), F_OK) != 0);
  std::remove((d + "/working-set").c_str());
  ::rmdir(dir);
}
