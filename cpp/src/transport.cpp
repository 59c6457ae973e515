#include "transport.hpp"

#include <cerrno>
#include <chrono>
#include <thread>

namespace probexec::detail {

namespace {
[[noreturn]] void fail(const std::string& what) { throw error(what + ": " + zmq_strerror(zmq_errno())); }
}  // namespace

Socket::Socket(int type) {
  ctx_ = zmq_ctx_new();
  if (!ctx_) fail("zmq_ctx_new");
  sock_ = zmq_socket(ctx_, type);
  if (!sock_) {
    zmq_ctx_term(ctx_);
    fail("zmq_socket");
  }
  int linger = 0;
  zmq_setsockopt(sock_, ZMQ_LINGER, &linger, sizeof linger);
}

Socket::~Socket() {
  if (sock_) zmq_close(sock_);
  if (ctx_) zmq_ctx_term(ctx_);
}

void Socket::bind(const std::string& address) {
  if (zmq_bind(sock_, address.c_str()) != 0) fail("cannot bind " + address);
  char buf[1024];
  std::size_t len = sizeof buf;
  endpoint_ = zmq_getsockopt(sock_, ZMQ_LAST_ENDPOINT, buf, &len) == 0 ? std::string(buf) : address;
}

void Socket::send(const void* data, std::size_t size) {
  while (zmq_send(sock_, data, size, 0) < 0) {
    if (zmq_errno() != EINTR) fail("zmq_send");
  }
}

void Socket::send_lent(const void* data, std::size_t size, std::atomic<bool>& released) {
  released.store(false, std::memory_order_relaxed);
  zmq_msg_t msg;
  auto release = [](void*, void* hint) { static_cast<std::atomic<bool>*>(hint)->store(true, std::memory_order_release); };
  if (zmq_msg_init_data(&msg, const_cast<void*>(data), size, release, &released) != 0) {
    released.store(true, std::memory_order_relaxed);
    fail("zmq_msg_init_data");
  }
  while (zmq_msg_send(&msg, sock_, 0) < 0) {
    if (zmq_errno() != EINTR) {
      const int err = zmq_errno();
      zmq_msg_close(&msg);  // not sent: ours to close, which releases the bytes
      errno = err;
      fail("zmq_msg_send");
    }
  }
}

void wait_released(const std::atomic<bool>& released, double limit_s) {
  if (released.load(std::memory_order_acquire)) return;
  const auto t0 = std::chrono::steady_clock::now();
  for (unsigned spins = 1; !released.load(std::memory_order_acquire); ++spins) {
    if (spins < 1000) {
      std::this_thread::yield();
      continue;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(100));
    if (spins % 1000 == 0 && std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > limit_s) {
      throw error("probexec: ZeroMQ still holds the last message sent after " + std::to_string(limit_s) +
                  " s; the outgoing buffer cannot be reused");
    }
  }
}

bool Socket::recv(ZmqMessage& msg, int timeout_ms) {
  // A blocking receive with ZMQ_RCVTIMEO, not zmq_poll: polling first costs an extra system call
  // and wake-up per message (~20 us a round trip here, a third of the whole ipc round trip).
  if (timeout_ms != rcvtimeo_) {
    if (zmq_setsockopt(sock_, ZMQ_RCVTIMEO, &timeout_ms, sizeof timeout_ms) != 0) fail("zmq_setsockopt(ZMQ_RCVTIMEO)");
    rcvtimeo_ = timeout_ms;
  }
  for (;;) {
    if (zmq_msg_recv(msg.get(), sock_, 0) >= 0) return true;
    if (zmq_errno() == EAGAIN) return false;
    if (zmq_errno() != EINTR) fail("zmq_msg_recv");
  }
}

}  // namespace probexec::detail
