#include "dms/serve/protocol.h"

#include <cstdio>
#include <limits>

#include "dms/util/error.h"

namespace dms::serve {

using nlohmann::json;

ApiError::ApiError(int status, std::string message, std::string param, std::string type)
    : status(status), message(std::move(message)), param(std::move(param)), type(std::move(type)) {
  if (this->type.empty()) {
    switch (status) {
      case 401: this->type = "authentication_error"; break;
      case 404: this->type = "not_found_error"; break;
      case 503: this->type = "service_unavailable"; break;
      default: this->type = status >= 500 ? "server_error" : "invalid_request_error";
    }
  }
}

json error_body(const ApiError& e) {
  return {{"error",
           {{"message", e.message}, {"type", e.type}, {"param", e.param.empty() ? json() : json(e.param)},
            {"code", e.status}}}};
}

namespace {

[[noreturn]] void bad(const std::string& param, const std::string& what) { throw ApiError(400, param + ": " + what, param); }

[[noreturn]] void wrong_type(const std::string& param, const char* expected, const json& v) {
  bad(param, std::string("expected ") + expected + ", got " + v.type_name());
}

// The field's value, or null when it is absent or null (OpenAI treats both as "not set").
const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

int64_t integer(const json& v, const std::string& param) {
  if (!v.is_number_integer()) wrong_type(param, "an integer", v);
  if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
    bad(param, "is too large");
  return v.get<int64_t>();
}

double number(const json& v, const std::string& param) {
  if (!v.is_number()) wrong_type(param, "a number", v);
  return v.get<double>();
}

bool boolean(const json& v, const std::string& param) {
  if (!v.is_boolean()) wrong_type(param, "a boolean", v);
  return v.get<bool>();
}

std::string string(const json& v, const std::string& param) {
  if (!v.is_string()) wrong_type(param, "a string", v);
  return v.get<std::string>();
}

// A number in [lo, hi] (or (lo, hi] with lo_open), `fallback` when absent.
double number_in(const json& body, const char* name, double lo, double hi, double fallback, bool lo_open = false) {
  const json* v = field(body, name);
  if (!v) return fallback;
  const double x = number(*v, name);
  if (x > hi || x < lo || (lo_open && x == lo)) {
    char range[64];
    std::snprintf(range, sizeof range, "%s%g, %g]", lo_open ? "(" : "[", lo, hi);
    bad(name, "must be in " + std::string(range) + ", got " + v->dump());
  }
  return x;
}

// Fields whose value changes what a client gets back in ways we do not implement: a value other
// than "off" is refused rather than silently ignored.
void refuse_unsupported(const json& body, Endpoint endpoint) {
  const auto refuse = [](const char* name, const std::string& why) { bad(name, "not supported" + why); };
  if (const json* v = field(body, "logprobs"); v && !(v->is_boolean() ? !v->get<bool>() : *v == 0))
    refuse("logprobs", "");
  if (const json* v = field(body, "top_logprobs"); v && *v != 0) refuse("top_logprobs", "");
  if (const json* v = field(body, "echo"); v && boolean(*v, "echo")) refuse("echo", "");
  if (const json* v = field(body, "suffix"); v && !string(*v, "suffix").empty()) refuse("suffix", "");
  if (const json* v = field(body, "logit_bias"); v && !v->empty()) refuse("logit_bias", "");
  for (const char* name : {"presence_penalty", "frequency_penalty"})
    if (const json* v = field(body, name); v && number(*v, name) != 0) refuse(name, " (only 0)");
  if (const json* v = field(body, "repetition_penalty"); v && number(*v, "repetition_penalty") != 1)
    refuse("repetition_penalty", " (only 1)");
  if (const json* v = field(body, "tools"); v && !v->empty()) refuse("tools", " (no tool calling)");
  if (const json* v = field(body, "tool_choice"); v && *v != "none" && *v != "auto") refuse("tool_choice", "");
  for (const char* name : {"functions", "function_call"})
    if (field(body, name)) refuse(name, " (no tool calling)");
  if (const json* v = field(body, "response_format"))
    if (!v->is_object() || v->value("type", "") != "text") refuse("response_format", " (only {\"type\": \"text\"})");
  if (endpoint == Endpoint::Completions)
    if (const json* v = field(body, "best_of"); v && integer(*v, "best_of") > 1)
      if (!field(body, "n") || integer(*v, "best_of") != integer(*field(body, "n"), "n"))
        refuse("best_of", " (only best_of equal to n)");
}

std::vector<ChatMessage> parse_messages(const json& body) {
  const json* messages = field(body, "messages");
  if (!messages) bad("messages", "is required");
  if (!messages->is_array()) wrong_type("messages", "a list of messages", *messages);
  if (messages->empty()) bad("messages", "must not be empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < messages->size(); ++i) {
    const json& m = (*messages)[i];
    const std::string at = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) wrong_type(at, "an object", m);
    const json* role = field(m, "role");
    if (!role) bad(at + ".role", "is required");
    std::string r = string(*role, at + ".role");
    if (r == "developer") r = "system";  // OpenAI's newer name for the system message
    if (r != "system" && r != "user" && r != "assistant")
      bad(at + ".role", "'" + r + "' is not supported (system, developer, user, assistant)");
    const json* content = field(m, "content");
    if (!content) bad(at + ".content", "is required");
    std::string text;
    if (content->is_string()) {
      text = content->get<std::string>();
    } else if (content->is_array()) {
      // Content parts: text only.
      for (size_t j = 0; j < content->size(); ++j) {
        const json& part = (*content)[j];
        const std::string pat = at + ".content[" + std::to_string(j) + "]";
        if (!part.is_object()) wrong_type(pat, "an object", part);
        const json* type = field(part, "type");
        if (!type || string(*type, pat + ".type") != "text")
          bad(pat + ".type", "only text content parts are supported");
        const json* t = field(part, "text");
        if (!t) bad(pat + ".text", "is required");
        text += string(*t, pat + ".text");
      }
    } else {
      wrong_type(at + ".content", "a string or a list of text parts", *content);
    }
    out.push_back({r, std::move(text)});
  }
  return out;
}

void parse_prompt(const json& body, CompletionRequest& r) {
  const json* prompt = field(body, "prompt");
  if (!prompt) bad("prompt", "is required");
  if (prompt->is_string()) {
    r.prompt = prompt->get<std::string>();
    return;
  }
  if (!prompt->is_array()) wrong_type("prompt", "a string or a list of token ids", *prompt);
  if (prompt->empty()) bad("prompt", "must not be empty");
  const json* one = &*prompt;
  // A batch of one prompt ("prompt": ["text"] or [[1, 2, 3]]) is that prompt.
  if ((*prompt)[0].is_string() || (*prompt)[0].is_array()) {
    if (prompt->size() != 1)
      bad("prompt", "a batch of " + std::to_string(prompt->size()) + " prompts is not supported; send one per request");
    one = &(*prompt)[0];
    if (one->is_string()) {
      r.prompt = one->get<std::string>();
      return;
    }
    if (one->empty()) bad("prompt", "must not be empty");
  }
  for (size_t i = 0; i < one->size(); ++i) {
    const std::string at = "prompt[" + std::to_string(i) + "]";
    const int64_t id = integer((*one)[i], at);
    if (id < 0 || id > std::numeric_limits<int32_t>::max()) bad(at, "token id " + std::to_string(id) + " is out of range");
    r.prompt_ids.push_back(static_cast<int32_t>(id));
  }
}

json parse_body(const std::string& text) {
  json body;
  try {
    body = json::parse(text);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for numbers past a double
    throw ApiError(400, std::string("the body is not valid JSON: ") + e.what());
  }
  if (!body.is_object()) throw ApiError(400, std::string("the body must be a JSON object, got ") + body.type_name());
  return body;
}

std::vector<int32_t> token_ids(const json& v, const std::string& param, int32_t vocab) {
  if (!v.is_array()) wrong_type(param, "a list of token ids", v);
  std::vector<int32_t> ids;
  for (size_t i = 0; i < v.size(); ++i) {
    const std::string at = param + "[" + std::to_string(i) + "]";
    const int64_t id = integer(v[i], at);
    if (id < 0 || id >= vocab)
      bad(at, "token id " + std::to_string(id) + " is outside the vocabulary of " + std::to_string(vocab));
    ids.push_back(static_cast<int32_t>(id));
  }
  return ids;
}

}  // namespace

CompletionRequest parse_completion_request(const std::string& body_text, Endpoint endpoint, int64_t max_n) {
  const json body = parse_body(body_text);
  refuse_unsupported(body, endpoint);

  CompletionRequest r;
  r.endpoint = endpoint;
  if (const json* v = field(body, "model")) r.model = string(*v, "model");
  if (endpoint == Endpoint::Chat)
    r.messages = parse_messages(body);
  else
    parse_prompt(body, r);

  for (const char* name : {"max_tokens", "max_completion_tokens"})
    if (const json* v = field(body, name)) {
      const int64_t m = integer(*v, name);
      if (m < 1) bad(name, "must be at least 1, got " + std::to_string(m));
      r.max_tokens = m;  // max_completion_tokens, checked second, wins where both are set
    }
  Sampling& s = r.sampling;
  s.temperature = number_in(body, "temperature", 0, 2, 1.0);
  s.top_p = number_in(body, "top_p", 0, 1, 1.0, true);
  s.min_p = number_in(body, "min_p", 0, 1, 0.0);
  if (const json* v = field(body, "top_k")) {
    const int64_t k = integer(*v, "top_k");
    if (k < -1) bad("top_k", "must be -1 or 0 (off) or positive, got " + std::to_string(k));
    s.top_k = k < 0 ? 0 : k;
  }
  if (const json* v = field(body, "seed")) s.seed = static_cast<uint64_t>(integer(*v, "seed"));

  if (const json* v = field(body, "stop")) {
    if (v->is_string()) {
      r.stop.push_back(v->get<std::string>());
    } else if (v->is_array()) {
      for (size_t i = 0; i < v->size(); ++i) r.stop.push_back(string((*v)[i], "stop[" + std::to_string(i) + "]"));
    } else {
      wrong_type("stop", "a string or a list of strings", *v);
    }
    for (const auto& stop : r.stop)
      if (stop.empty()) bad("stop", "stop strings must not be empty");
  }
  if (const json* v = field(body, "n")) {
    r.n = integer(*v, "n");
    if (r.n < 1 || r.n > max_n) bad("n", "must be between 1 and " + std::to_string(max_n) + ", got " + std::to_string(r.n));
  }
  if (const json* v = field(body, "stream")) r.stream = boolean(*v, "stream");
  if (const json* v = field(body, "stream_options")) {
    if (!r.stream) bad("stream_options", "is only allowed with \"stream\": true");
    if (!v->is_object()) wrong_type("stream_options", "an object", *v);
    if (const json* u = field(*v, "include_usage")) r.include_usage = boolean(*u, "stream_options.include_usage");
  }
  if (const json* v = field(body, "ignore_eos")) r.ignore_eos = boolean(*v, "ignore_eos");
  return r;
}

std::vector<int32_t> parse_tokenize(const std::string& body_text, const ServedModel& model) {
  const json body = parse_body(body_text);
  const Tokenizer& tok = *model.tokenizer;
  try {
    if (field(body, "messages"))
      return tok.encode(model.chat_template->render(parse_messages(body), true), false);
    const json* prompt = field(body, "prompt");
    if (!prompt) bad("prompt", "is required (or messages)");
    bool add_special = true;
    if (const json* v = field(body, "add_special_tokens")) add_special = boolean(*v, "add_special_tokens");
    return tok.encode(string(*prompt, "prompt"), add_special && tok.add_bos_default());
  } catch (const Error& e) {
    throw ApiError(400, e.what());
  }
}

std::string parse_detokenize(const std::string& body_text, const ServedModel& model) {
  const json body = parse_body(body_text);
  const json* tokens = field(body, "tokens");
  if (!tokens) bad("tokens", "is required");
  return model.tokenizer->decode(token_ids(*tokens, "tokens", model.tokenizer->vocab_size()));
}

PreparedPrompt prepare_prompt(const CompletionRequest& request, const ServedModel& model) {
  PreparedPrompt p;
  const Tokenizer& tok = *model.tokenizer;
  const std::string param = request.endpoint == Endpoint::Chat ? "messages" : "prompt";
  try {
    if (request.endpoint == Endpoint::Chat) {
      // The rendered template carries its own BOS text where the family has one.
      p.ids = tok.encode(model.chat_template->render(request.messages, true), false);
      p.stop_strings = model.chat_template->stop_strings();
      const size_t n = request.messages.size();
      std::vector<size_t> ends{1};  // after the first message, and before the last
      if (n > 2) ends.push_back(n - 1);
      for (size_t end : ends) {
        if (end >= n) continue;
        const std::vector<ChatMessage> head(request.messages.begin(), request.messages.begin() + end);
        const auto ids = tok.encode(model.chat_template->render(head, false), false);
        if (ids.size() < p.ids.size() && std::equal(ids.begin(), ids.end(), p.ids.begin()))
          p.cache_points.push_back(static_cast<int64_t>(ids.size()));
      }
    } else if (!request.prompt_ids.empty()) {
      p.ids = request.prompt_ids;
    } else {
      p.ids = tok.encode(request.prompt, tok.add_bos_default());
    }
  } catch (const Error& e) {
    throw ApiError(400, param + ": " + e.what(), param);
  }
  for (size_t i = 0; i < p.ids.size(); ++i)
    if (p.ids[i] >= tok.vocab_size())
      bad("prompt[" + std::to_string(i) + "]", "token id " + std::to_string(p.ids[i]) +
                                                   " is outside the vocabulary of " + std::to_string(tok.vocab_size()));
  if (p.ids.empty()) bad(param, "encodes to no tokens");
  const int64_t n = static_cast<int64_t>(p.ids.size());
  const int64_t context = model.context_length;
  if (n >= context)
    bad(param, "the prompt has " + std::to_string(n) + " tokens; the model's context length is " +
                   std::to_string(context) + " (prompt and generated tokens together)");
  if (request.max_tokens) {
    p.max_tokens = *request.max_tokens;
    if (n + p.max_tokens > context)
      bad("max_tokens", "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" + std::to_string(p.max_tokens) +
                            ") exceeds the model's context length of " + std::to_string(context));
  } else {
    p.max_tokens = context - n;
  }
  p.stop_strings.insert(p.stop_strings.end(), request.stop.begin(), request.stop.end());
  if (!request.ignore_eos) p.stop_ids = model.eos_ids;
  return p;
}

std::string finish_reason(const std::string& engine_stop_reason) {
  if (engine_stop_reason == "stop token" || engine_stop_reason == "stop string") return "stop";
  if (engine_stop_reason == "aborted") return "abort";
  return "length";  // max tokens, context length, a sequence the whole cache cannot hold
}

json usage_json(const Usage& u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens},
          {"prompt_tokens_details", {{"cached_tokens", u.cached_tokens}}}};
}

namespace {

json envelope(Endpoint endpoint, bool chunk, const std::string& id, int64_t created, const std::string& model) {
  const char* object = endpoint == Endpoint::Chat ? (chunk ? "chat.completion.chunk" : "chat.completion")
                                                  : "text_completion";
  return {{"id", id}, {"object", object}, {"created", created}, {"model", model}};
}

json reason_or_null(const std::string& reason) { return reason.empty() ? json() : json(reason); }

}  // namespace

json completion_response(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model,
                         const std::vector<Choice>& choices, const Usage& usage) {
  json out = envelope(endpoint, false, id, created, model);
  json list = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    json c = {{"index", i}, {"finish_reason", reason_or_null(choices[i].finish_reason)}, {"logprobs", nullptr}};
    if (endpoint == Endpoint::Chat)
      c["message"] = {{"role", "assistant"}, {"content", choices[i].text}};
    else
      c["text"] = choices[i].text;
    list.push_back(std::move(c));
  }
  out["choices"] = std::move(list);
  out["usage"] = usage_json(usage);
  return out;
}

json stream_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model, int64_t index,
                  const std::string& text, const std::string& finish_reason, bool role, bool include_usage) {
  json out = envelope(endpoint, true, id, created, model);
  json c = {{"index", index}, {"finish_reason", reason_or_null(finish_reason)}, {"logprobs", nullptr}};
  if (endpoint == Endpoint::Chat) {
    json delta = json::object();
    if (role) delta["role"] = "assistant";
    if (role || !text.empty()) delta["content"] = text;
    c["delta"] = std::move(delta);
  } else {
    c["text"] = text;
  }
  out["choices"] = json::array({std::move(c)});
  if (include_usage) out["usage"] = nullptr;
  return out;
}

json usage_chunk(Endpoint endpoint, const std::string& id, int64_t created, const std::string& model, const Usage& usage) {
  json out = envelope(endpoint, true, id, created, model);
  out["choices"] = json::array();
  out["usage"] = usage_json(usage);
  return out;
}

}  // namespace dms::serve
