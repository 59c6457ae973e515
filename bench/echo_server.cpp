// The raw ZeroMQ floor for bench/protocol.py: a REP socket that echoes every message, with no
// FlatBuffers and no probexec in between. Usage: probexec-bench-echo ipc:///tmp/x.sock
#include <zmq.h>

#include <cstdio>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s ADDRESS\n", argv[0]);
    return 2;
  }
  void* ctx = zmq_ctx_new();
  void* sock = zmq_socket(ctx, ZMQ_REP);
  if (zmq_bind(sock, argv[1]) != 0) {
    std::fprintf(stderr, "cannot bind %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
    return 1;
  }
  zmq_msg_t msg;
  zmq_msg_init(&msg);
  for (;;) {
    if (zmq_msg_recv(&msg, sock, 0) < 0) break;
    // A one-byte message is the stop request.
    bool stop = zmq_msg_size(&msg) == 1;
    if (zmq_msg_send(&msg, sock, 0) < 0) break;
    if (stop) break;
  }
  zmq_msg_close(&msg);
  zmq_close(sock);
  zmq_ctx_term(ctx);
  return 0;
}
