// The HTTP face of `dms serve`: OpenAI's endpoints over a Generator. Handlers only translate:
// protocol.h parses and validates, the Generator runs, the request's channel brings the text back.
//
//   POST /v1/chat/completions, /v1/completions   (stream: server-sent events)
//   GET  /v1/models, /health, /metrics           (Prometheus text)
//   POST /tokenize, /detokenize
//
// With an API key, /v1/*, /tokenize and /detokenize need "Authorization: Bearer KEY"; /health and
// /metrics stay open for probes and scrapers.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "dms/serve/generator.h"
#include "dms/serve/metrics.h"
#include "dms/serve/protocol.h"

namespace dms::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                       // 0: any free port (bind() returns it)
  std::string api_key;                   // empty: no key needed
  int64_t max_body_bytes = 4 << 20;      // larger bodies get 413
  int64_t max_n = 16;                    // most choices per request
  int threads = 64;                      // HTTP threads: each open stream holds one
  double timeout_s = 600;                // a connection's wait to read a request or write a reply
};

// Fails (Error naming --port or --host) where host:port cannot be bound now, e.g. another server
// listens on it: `dms serve` asks before it loads the model, so that the mistake is reported at
// once. HttpServer::bind() still decides. Port 0 (any free port) always passes.
void check_port(const std::string& host, int port);

class HttpServer {
 public:
  HttpServer(ServedModel model, Generator& generator, ServeMetrics& metrics, ServerOptions options);
  ~HttpServer();
  // Binds the listening socket; returns the port. Throws Error when it cannot.
  int bind();
  // Serves until stop(); call bind() first.
  void run();
  // From now on completions are refused (503) and /health answers 503; open streams go on.
  void drain();
  // Closes the listening socket; run() returns once the open connections are done. Before run(),
  // makes run() return at once.
  void stop();
  // Responses still streaming.
  int64_t open_streams() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace dms::serve
