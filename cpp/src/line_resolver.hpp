// Function and file:line of code addresses in one module, from one `addr2line` co-process.
//
// A new address's readable form names the source line of every frame. Running addr2line once per
// new address cost a simulator 20-50 ms each (a process start and the module's debug info read
// again): the tau decay's first three traces took 0.9 s, and a fresh pool of 32 simulators ran IC
// at 26 traces/s against 122 without it. One co-process per module, fed addresses on its stdin as
// they come, reads the debug info once and answers a known compile unit in about 0.1 ms.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace probexec::detail {

class LineResolver {
 public:
  // Starts `addr2line -C -f -e module`. Without addr2line, ok() is false and lookups come back
  // empty: addresses are then named by function and offset alone.
  explicit LineResolver(const std::string& module);
  ~LineResolver();
  LineResolver(const LineResolver&) = delete;
  LineResolver& operator=(const LineResolver&) = delete;

  bool ok() const { return pid_ > 0; }
  // (function, "file:line") per offset (as the module's symbols count them); empty strings where
  // the debug info has none. A co-process that stops answering within `timeout_ms` is killed, and
  // this and every later lookup come back empty.
  std::vector<std::pair<std::string, std::string>> resolve(const std::vector<std::uintptr_t>& offsets,
                                                           int timeout_ms = 10000);

 private:
  bool read_line(std::string* line, int timeout_ms);
  void stop();

  pid_t pid_ = -1;
  int fd_ = -1;        // our end of a socket pair: the child's stdin and stdout
  std::string buffer_;  // bytes read past the last full line
};

}  // namespace probexec::detail
