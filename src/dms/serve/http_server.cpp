#include "dms/serve/http_server.h"

#include <httplib.h>

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <random>
#include <thread>

#include "dms/util/error.h"

namespace dms::serve {

using nlohmann::json;

namespace {

constexpr auto kPoll = std::chrono::milliseconds(100);
// A stream that has nothing to say for this long sends an SSE comment (clients skip it): writing
// is the only way to notice a client that went away while its request waits or prefills.
constexpr auto kHeartbeat = std::chrono::seconds(1);

// Request ids and seeds: one generator for every HTTP thread.
uint64_t random_u64() {
  static std::mutex mutex;
  static std::mt19937_64 rng(std::random_device{}());
  std::lock_guard<std::mutex> lock(mutex);
  return rng();
}

std::string random_hex(size_t digits) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < digits; ++i) out += hex[random_u64() & 15];
  return out;
}

uint64_t random_seed() { return random_u64() & 0x7fffffffffffffffULL; }

void send_json(httplib::Response& res, const json& body, int status = 200) {
  res.status = status;
  res.set_content(body.dump(), "application/json");
}

// One streamed response: its choices' progress and usage.
struct Stream {
  std::shared_ptr<ResponseChannel> channel;
  Endpoint endpoint;
  std::string id, model;
  int64_t created = 0;
  int64_t n = 1;
  bool include_usage = false;
  Usage usage;
  int64_t finished = 0;
  bool started = false, done = false;
  std::chrono::steady_clock::time_point last_write;
};

// "--port N: cannot listen on HOST:N (why)", for check_port and bind alike.
[[noreturn]] void fail_port(const std::string& host, int port, const std::string& why) {
  fail("--port " + std::to_string(port), "cannot listen on " + host + ":" + std::to_string(port) + " (" + why + ")");
}

}  // namespace

struct HttpServer::Impl {
  ServedModel model;
  Generator& generator;
  ServeMetrics& metrics;
  ServerOptions options;
  httplib::Server http;
  std::atomic<bool> draining{false};
  std::atomic<int64_t> open_streams{0};
  std::atomic<bool> stopped{false}, in_run{false};
  socket_t listen_socket = INVALID_SOCKET;

  Impl(ServedModel m, Generator& g, ServeMetrics& mt, ServerOptions o)
      : model(std::move(m)), generator(g), metrics(mt), options(std::move(o)) {}

  void routes();
  // Runs `handler`, answering an ApiError (or anything else, as a 500) in OpenAI's shape.
  void guarded(const httplib::Request& req, httplib::Response& res, bool authenticated,
               const std::function<void()>& handler);
  void check_key(const httplib::Request& req) const;
  void completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint);
  void respond_whole(httplib::Response& res, Stream& s);
  void respond_stream(httplib::Response& res, std::shared_ptr<Stream> s);
};

void HttpServer::Impl::check_key(const httplib::Request& req) const {
  if (options.api_key.empty()) return;
  const std::string auth = req.get_header_value("Authorization");
  if (auth.empty()) throw ApiError(401, "missing API key: send the header 'Authorization: Bearer <key>'");
  if (auth != "Bearer " + options.api_key) throw ApiError(401, "invalid API key");
}

void HttpServer::Impl::guarded(const httplib::Request& req, httplib::Response& res, bool authenticated,
                               const std::function<void()>& handler) {
  try {
    if (authenticated) check_key(req);
    handler();
  } catch (const ApiError& e) {
    metrics.rejected(e.status);
    send_json(res, error_body(e), e.status);
  } catch (const std::exception& e) {
    metrics.rejected(500);
    send_json(res, error_body(ApiError(500, std::string("internal error: ") + e.what())), 500);
  }
}

void HttpServer::Impl::completion(const httplib::Request& req, httplib::Response& res, Endpoint endpoint) {
  if (draining) throw ApiError(503, "the server is shutting down");
  const CompletionRequest r = parse_completion_request(req.body, endpoint, options.max_n);
  if (!r.model.empty() && r.model != model.name)
    throw ApiError(404, "the model '" + r.model + "' does not exist; this server serves '" + model.name + "'", "model");
  const PreparedPrompt p = prepare_prompt(r, model);

  auto s = std::make_shared<Stream>();
  s->channel = std::make_shared<ResponseChannel>();
  s->endpoint = endpoint;
  s->id = (endpoint == Endpoint::Chat ? "chatcmpl-" : "cmpl-") + random_hex(24);
  s->model = model.name;
  s->created = static_cast<int64_t>(std::time(nullptr));
  s->n = r.n;
  s->include_usage = r.include_usage;
  s->usage.prompt_tokens = static_cast<int64_t>(p.ids.size());

  // The choices of one prompt: seeds seed, seed + 1, ... so that each draws differently and a
  // seeded request repeats.
  const uint64_t seed = r.sampling.seed ? *r.sampling.seed : random_seed();
  std::vector<GenerationJob> jobs;
  for (int64_t i = 0; i < r.n; ++i) {
    GenerationJob job;
    job.id = s->id + "#" + std::to_string(i);
    job.index = i;
    job.prompt = p.ids;
    job.max_tokens = p.max_tokens;
    job.sampling = r.sampling;
    job.sampling.seed = seed + static_cast<uint64_t>(i);
    job.stop_strings = p.stop_strings;
    job.stop_ids = p.stop_ids;
    job.cache_points = p.cache_points;
    job.channel = s->channel;
    job.arrived = std::chrono::steady_clock::now();
    jobs.push_back(std::move(job));
  }
  switch (generator.submit(std::move(jobs))) {
    case Generator::Admission::Queued: break;
    case Generator::Admission::QueueFull:
      res.set_header("Retry-After", "1");
      throw ApiError(503, "the server is busy: its queue is full; retry later");
    case Generator::Admission::ShuttingDown: throw ApiError(503, "the server is shutting down");
  }
  metrics.received(r.n, s->usage.prompt_tokens);  // the choices share one prefill
  if (r.stream)
    respond_stream(res, s);
  else
    respond_whole(res, *s);
}

void HttpServer::Impl::respond_whole(httplib::Response& res, Stream& s) {
  std::vector<Choice> choices(static_cast<size_t>(s.n));
  std::string error;
  while (s.finished < s.n) {
    for (StreamEvent& e : s.channel->take(kPoll)) {
      Choice& c = choices[static_cast<size_t>(e.index)];
      c.text += e.text;
      if (!e.finish) continue;
      c.finish_reason = e.finish->reason;
      if (e.finish->reason == "error") error = e.finish->error;
      s.usage.completion_tokens += e.finish->completion_tokens;
      s.usage.cached_tokens = std::max(s.usage.cached_tokens, e.finish->cached_tokens);
      ++s.finished;
    }
  }
  if (!error.empty()) throw ApiError(500, "generation failed: " + error);
  send_json(res, completion_response(s.endpoint, s.id, s.created, s.model, choices, s.usage));
}

void HttpServer::Impl::respond_stream(httplib::Response& res, std::shared_ptr<Stream> s) {
  ++open_streams;
  s->last_write = std::chrono::steady_clock::now();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [s](size_t, httplib::DataSink& sink) {
        const auto send = [&](const std::string& data) {
          s->last_write = std::chrono::steady_clock::now();
          return sink.write(data.data(), data.size());
        };
        const auto event = [&](const json& j) { return send("data: " + j.dump() + "\n\n"); };
        bool ok = true;
        if (!s->started) {
          s->started = true;
          if (s->endpoint == Endpoint::Chat)  // the first delta of each choice names the role
            for (int64_t i = 0; i < s->n && ok; ++i)
              ok = event(stream_chunk(s->endpoint, s->id, s->created, s->model, i, "", "", true, s->include_usage));
        }
        for (StreamEvent& e : s->channel->take(kPoll)) {
          if (!ok) break;
          if (!e.text.empty())
            ok = event(stream_chunk(s->endpoint, s->id, s->created, s->model, e.index, e.text, "", false,
                                    s->include_usage));
          if (!e.finish || !ok) continue;
          ++s->finished;
          s->usage.completion_tokens += e.finish->completion_tokens;
          s->usage.cached_tokens = std::max(s->usage.cached_tokens, e.finish->cached_tokens);
          if (e.finish->reason == "error")
            ok = event(error_body(ApiError(500, "generation failed: " + e.finish->error)));
          else
            ok = event(stream_chunk(s->endpoint, s->id, s->created, s->model, e.index, "", e.finish->reason, false,
                                    s->include_usage));
        }
        if (ok && s->finished == s->n) {
          if (s->include_usage) ok = event(usage_chunk(s->endpoint, s->id, s->created, s->model, s->usage));
          if (ok) ok = send("data: [DONE]\n\n");
          if (ok) {
            s->done = true;
            sink.done();
          }
        } else if (ok && std::chrono::steady_clock::now() - s->last_write > kHeartbeat) {
          ok = send(": waiting\n\n");
        }
        if (!ok) s->channel->cancel();  // the client went away: the engine aborts its sequences
        return ok;
      },
      [this, s](bool) {
        if (!s->done) s->channel->cancel();
        --open_streams;
      });
}

void HttpServer::Impl::routes() {
  http.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(req, res, true, [&] { completion(req, res, Endpoint::Chat); });
  });
  http.Post("/v1/completions", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(req, res, true, [&] { completion(req, res, Endpoint::Completions); });
  });
  http.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(req, res, true, [&] {
      json m = {{"id", model.name}, {"object", "model"}, {"created", 0}, {"owned_by", "dms"},
                {"max_model_len", model.context_length}};
      send_json(res, {{"object", "list"}, {"data", json::array({m})}});
    });
  });
  http.Post("/tokenize", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(req, res, true, [&] {
      const std::vector<int32_t> ids = parse_tokenize(req.body, model);
      send_json(res, {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", model.context_length}});
    });
  });
  http.Post("/detokenize", [this](const httplib::Request& req, httplib::Response& res) {
    guarded(req, res, true, [&] { send_json(res, {{"prompt", parse_detokenize(req.body, model)}}); });
  });
  http.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    if (draining)
      send_json(res, {{"status", "shutting down"}}, 503);
    else
      send_json(res, {{"status", "ok"}});
  });
  http.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics.render(generator.stats()), "text/plain; version=0.0.4");
  });
  // Statuses httplib answers itself (unknown path 404, wrong method 405, oversized body 413, ...)
  // get a body of the same shape as ours.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                     httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string message = "HTTP " + std::to_string(res.status);
    if (res.status == 400) {  // httplib could not parse the request, or gave up reading it
      char timeout[32];
      std::snprintf(timeout, sizeof timeout, "%g", options.timeout_s);
      message = std::string("the request could not be read: malformed, or not received within --timeout ") +
                timeout + " s";
    }
    if (res.status == 404) message = "no endpoint " + req.method + " " + req.path;
    if (res.status == 413)
      message = "the request body is larger than the limit of " + std::to_string(options.max_body_bytes) + " bytes";
    metrics.rejected(res.status);
    send_json(res, error_body(ApiError(res.status, message)), res.status);
    return httplib::Server::HandlerResponse::Handled;
  }));
}

HttpServer::HttpServer(ServedModel model, Generator& generator, ServeMetrics& metrics, ServerOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), generator, metrics, std::move(options))) {
  const int threads = std::max(4, impl_->options.threads);
  impl_->http.new_task_queue = [threads] { return new httplib::ThreadPool(static_cast<size_t>(threads)); };
  impl_->http.set_payload_max_length(static_cast<size_t>(impl_->options.max_body_bytes));
  // httplib's default of 5 s would cut off a client that sends its request slowly or stops
  // reading a stream for a moment.
  const auto timeout = std::chrono::duration<double>(impl_->options.timeout_s);
  impl_->http.set_read_timeout(timeout);
  impl_->http.set_write_timeout(timeout);
  impl_->routes();
}

HttpServer::~HttpServer() = default;

void check_port(const std::string& host, int port) {
  if (port == 0) return;
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  addrinfo* found = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    fail("--host " + host, std::string("cannot listen on it (") + gai_strerror(rc) + ")");
  const int fd = socket(found->ai_family, found->ai_socktype, found->ai_protocol);
  int error = fd < 0 ? errno : 0;
  if (fd >= 0) {
    const int yes = 1;  // as bind() sets it: a port left in TIME_WAIT by an earlier run is free
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    if (::bind(fd, found->ai_addr, found->ai_addrlen) != 0) error = errno;
    close(fd);
  }
  freeaddrinfo(found);
  if (error != 0) fail_port(host, port, std::strerror(error));
}

int HttpServer::bind() {
  Impl& m = *impl_;
  // httplib's own options set SO_REUSEPORT, with which a second server binds a port that one
  // already listens on and the kernel splits the connections between them: SO_REUSEADDR only.
  m.http.set_socket_options([&m](socket_t sock) {
    const int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    m.listen_socket = sock;  // the last one is the socket that binds
  });
  int port = m.options.port;
  if (port == 0) {
    port = m.http.bind_to_any_port(m.options.host);
    if (port < 0) fail("--host " + m.options.host, "cannot listen on it");
  } else if (!m.http.bind_to_port(m.options.host, port)) {
    fail_port(m.options.host, port, "in use, or not allowed");
  }
  // httplib listens with a backlog of 5. A burst of clients overflows it, and a connection whose
  // handshake the kernel dropped can come through seconds later, after httplib stopped waiting
  // for its request: the client sees a reset. Listening again sets the system's limit.
  if (::listen(m.listen_socket, SOMAXCONN) != 0) fail("--port " + std::to_string(port), "cannot listen on it");
  return port;
}

void HttpServer::run() {
  impl_->in_run = true;
  if (!impl_->stopped) impl_->http.listen_after_bind();
  impl_->in_run = false;
}

void HttpServer::drain() { impl_->draining = true; }

void HttpServer::stop() {
  impl_->stopped = true;
  // httplib's stop() does nothing before listen_after_bind() has begun listening: a stop() that
  // comes while run() is on its way there (a signal at start-up) waits until it listens.
  while (impl_->in_run && !impl_->http.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  impl_->http.stop();
}

int64_t HttpServer::open_streams() const { return impl_->open_streams; }

}  // namespace dms::serve
