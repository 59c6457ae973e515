#include "line_resolver.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

extern char** environ;

namespace probexec::detail {

LineResolver::LineResolver(const std::string& module) {
  int sp[2];
  // A socket, not a pipe: a write to a child that died gives EPIPE (MSG_NOSIGNAL) instead of a
  // SIGPIPE that would kill the simulator.
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) return;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, sp[1], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, sp[1], STDOUT_FILENO);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
  std::string prog = "addr2line", c = "-C", f = "-f", e = "-e", path = module;
  char* argv[] = {prog.data(), c.data(), f.data(), e.data(), path.data(), nullptr};
  pid_t pid = -1;
  // posix_spawn does not copy the simulator's address space (glibc uses CLONE_VM), unlike fork.
  int rc = posix_spawnp(&pid, "addr2line", &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(sp[1]);
  if (rc != 0) {
    ::close(sp[0]);
    return;
  }
  pid_ = pid;
  fd_ = sp[0];
}

LineResolver::~LineResolver() { stop(); }

void LineResolver::stop() {
  if (fd_ >= 0) ::close(fd_);  // addr2line ends at the end of its input
  fd_ = -1;
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);  // and at once if it was still reading debug info
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
  pid_ = -1;
}

bool LineResolver::read_line(std::string* line, int timeout_ms) {
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      line->assign(buffer_, 0, nl);
      buffer_.erase(0, nl + 1);
      if (!line->empty() && line->back() == '\r') line->pop_back();
      return true;
    }
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;  // silent past the timeout
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;  // it exited
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
}

std::vector<std::pair<std::string, std::string>> LineResolver::resolve(const std::vector<std::uintptr_t>& offsets,
                                                                       int timeout_ms) {
  std::vector<std::pair<std::string, std::string>> out(offsets.size());
  if (!ok() || offsets.empty()) return out;
  std::string request;
  for (auto o : offsets) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%lx\n", static_cast<unsigned long>(o));
    request += buf;
  }
  // A few frames, some hundred bytes each way: well inside the socket's buffers.
  for (std::size_t sent = 0; sent < request.size();) {
    ssize_t n = ::send(fd_, request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      stop();
      return out;
    }
    sent += static_cast<std::size_t>(n);
  }
  for (auto& [fn, loc] : out) {
    if (!read_line(&fn, timeout_ms) || !read_line(&loc, timeout_ms)) {
      stop();
      return std::vector<std::pair<std::string, std::string>>(offsets.size());
    }
    auto disc = loc.find(" (discriminator");
    if (disc != std::string::npos) loc.erase(disc);
    if (fn == "??") fn.clear();
    if (loc.rfind("??", 0) == 0) loc.clear();
  }
  return out;
}

}  // namespace probexec::detail
