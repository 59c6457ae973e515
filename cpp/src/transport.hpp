// A ZeroMQ socket with RAII and explicit timeouts: every wait says how long it may take.
#pragma once

#include <zmq.h>

#include <atomic>
#include <cstdint>
#include <string>

#include "probexec/probexec.hpp"

namespace probexec::detail {

// One received ZeroMQ message, released on destruction.
class ZmqMessage {
 public:
  ZmqMessage() { zmq_msg_init(&msg_); }
  ~ZmqMessage() { zmq_msg_close(&msg_); }
  ZmqMessage(const ZmqMessage&) = delete;
  ZmqMessage& operator=(const ZmqMessage&) = delete;
  zmq_msg_t* get() { return &msg_; }
  const std::uint8_t* data() { return static_cast<const std::uint8_t*>(zmq_msg_data(&msg_)); }
  std::size_t size() { return zmq_msg_size(&msg_); }

 private:
  zmq_msg_t msg_;
};

class Socket {
 public:
  Socket(int type);
  ~Socket();
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;

  void bind(const std::string& address);
  void send(const void* data, std::size_t size);
  // Sends the bytes without copying them (a calorimeter image's Observe is 392 kB, and copying it
  // into a fresh ZeroMQ message cost the simulator a page fault per 4 kB on every trace).
  // ZeroMQ's I/O thread reads them while it writes the message out, then sets `released`; until
  // then the bytes must stay as they are (`wait_released`). `released` must outlive the socket.
  void send_lent(const void* data, std::size_t size, std::atomic<bool>& released);
  // False when nothing arrived within `timeout_ms` (-1: wait forever).
  bool recv(ZmqMessage& msg, int timeout_ms);
  const std::string& endpoint() const { return endpoint_; }

 private:
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::string endpoint_;
  int rcvtimeo_ = -1;  // ZeroMQ's default: wait forever
};

// Returns once ZeroMQ has released bytes lent by `Socket::send_lent`. That is at once in the
// request/reply lockstep: the engine answers only after it has the whole message. Closing the
// socket releases them too. Throws probexec::error after `limit_s` seconds rather than hang.
void wait_released(const std::atomic<bool>& released, double limit_s = 60.0);

}  // namespace probexec::detail
