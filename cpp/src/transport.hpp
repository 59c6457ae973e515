// A ZeroMQ socket with RAII and explicit timeouts: every wait says how long it may take.
#pragma once

#include <zmq.h>

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
  // False when nothing arrived within `timeout_ms` (-1: wait forever).
  bool recv(ZmqMessage& msg, int timeout_ms);
  const std::string& endpoint() const { return endpoint_; }

 private:
  void* ctx_ = nullptr;
  void* sock_ = nullptr;
  std::string endpoint_;
  int rcvtimeo_ = -1;  // ZeroMQ's default: wait forever
};

}  // namespace probexec::detail
