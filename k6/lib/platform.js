// The platform's contract, read from its platform file: the one place k6 learns how to log in,
// create conversations, send and read (docs/platforms.md). k6 cannot read YAML, so
// chaosmessaging.actions.load.start_load writes the platform file, validated and normalized, as
// JSON and passes its path in PLATFORM_FILE. Secrets the file names as ${NAME} stay unresolved in
// that JSON and are read here from k6's process environment (never the command line).
//
// Placeholders are {name}: a string that is exactly one placeholder takes the value with its type
// (a list stays a list), inside a longer string it is written as text (URL-quoted in a path).
// JSONPaths: the subset $.a.b, [n], [*] (converted to k6's gjson selectors).
import http from "k6/http";

function loadPlatform() {
  const path = __ENV.PLATFORM_FILE;
  if (!path) {
    throw new Error(
      "PLATFORM_FILE is not set: run this script through chaosmessaging.actions.load.start_load, " +
        "which writes the platform file (configuration key 'platform') as JSON for k6",
    );
  }
  return JSON.parse(open(path));
}

export const platform = loadPlatform();

const PLACEHOLDER = /\{([a-z_][a-z0-9_]*)\}/g;
const WHOLE = /^\{([a-z_][a-z0-9_]*)\}$/;
const ENV_VAR = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g;

function secretsFromEnv(text) {
  return text.replace(ENV_VAR, (_m, name, fallback) => {
    const value = __ENV[name];
    if (value !== undefined && value !== "") return value;
    if (fallback !== undefined) return fallback;
    throw new Error(`\${${name}} is not set in k6's environment`);
  });
}

function value(values, name, where) {
  if (!(name in values)) throw new Error(`${where}: no value for placeholder {${name}}`);
  return values[name];
}

// `node` with every {name} filled from `values` (see the header).
export function render(node, values, where, quote) {
  if (Array.isArray(node)) return node.map((v, i) => render(v, values, `${where}.${i}`, quote));
  if (node !== null && typeof node === "object") {
    const out = {};
    for (const key of Object.keys(node)) out[key] = render(node[key], values, `${where}.${key}`, quote);
    return out;
  }
  if (typeof node !== "string") return node;
  const text = secretsFromEnv(node);
  const whole = WHOLE.exec(text);
  if (whole && !quote) return value(values, whole[1], where);
  return text.replace(PLACEHOLDER, (_m, name) => {
    const v = String(value(values, name, where));
    return quote ? encodeURIComponent(v) : v;
  });
}

// "$.a.b[0]" -> "a.b.0"; "$.items[*].id" -> "items.#.id"; "$" -> "@this"
export function selector(jsonpath) {
  const body = jsonpath.replace(/^\$\.?/, "");
  if (!body) return "@this";
  return body.replace(/\[\*\]/g, ".#").replace(/\[(\d+)\]/g, ".$1").replace(/^\./, "");
}

// The operation at a dotted place: "send", "login.request", "conversations.create", ...
export function operation(where) {
  let node = platform;
  for (const part of where.split(".")) node = node === null || node === undefined ? undefined : node[part];
  if (!node) throw new Error(`the platform file of '${platform.name}' describes no ${where}`);
  return node;
}

export function has(where) {
  try {
    operation(where);
    return true;
  } catch (_e) {
    return false;
  }
}

function query(params) {
  const keys = Object.keys(params);
  if (!keys.length) return "";
  return "?" + keys.map((k) => `${encodeURIComponent(k)}=${encodeURIComponent(String(params[k]))}`).join("&");
}

// Send operation `where` with `values`, authenticated by `token` (null: no token), and k6
// `params` (tags, timeout...). Returns the k6 response (body as text).
export function request(where, values, token, params) {
  const op = operation(where);
  const service = platform.services[op.service];
  const headers = Object.assign({}, render(op.headers || {}, values, `${where}.headers`));
  const q = Object.assign({}, render(op.query || {}, values, `${where}.query`));
  if (op.authenticated !== false && token) {
    const sendAs = platform.login.send_as;
    if (sendAs.header) headers[sendAs.header] = sendAs.format.replace("{token}", token);
    else q[sendAs.query] = token;
  }
  let body = null;
  if (op.body !== null && op.body !== undefined) {
    body = JSON.stringify(render(op.body, values, `${where}.body`));
    headers["Content-Type"] = "application/json";
  }
  const url = service.url + render(op.path, values, `${where}.path`, true) + query(q);
  const options = Object.assign({ responseType: "text" }, params || {});
  options.headers = Object.assign(headers, (params && params.headers) || {});
  options.tags = Object.assign({ name: where }, (params && params.tags) || {});
  return http.request(op.method, url, body, options);
}

// What `status` means for operation `where`: ok, forbidden, conflict, not_found, too_large,
// unauthorized, or "other".
export function outcome(where, status) {
  const op = operation(where);
  for (const kind of ["ok", "forbidden", "conflict", "not_found", "too_large", "unauthorized"]) {
    if ((op[kind] || []).indexOf(status) >= 0) return kind;
  }
  return "other";
}

export function isOk(where, res) {
  return outcome(where, res.status) === "ok";
}

export function statuses(where, kind) {
  return operation(where)[kind] || [];
}

// The value operation `where` extracts as `name` from a response (null when absent).
export function extract(where, res, name) {
  const path = (operation(where).extract || {})[name];
  if (!path) throw new Error(`${where} extracts no '${name}' (extract.${name} in the platform file)`);
  return read(res, path);
}

export function read(res, jsonpath) {
  try {
    const v = res.json(selector(jsonpath));
    return v === undefined ? null : v;
  } catch (_e) {
    return null;
  }
}

// ---- the calls every script makes ----

export function username(prefix, n) {
  return platform.login.username.replace("{prefix}", prefix).replace("{n}", String(n));
}

export function loginRequest(user, password, n, params) {
  return request("login.request", { user: user, password: password, n: n || 0, device_id: `k6-${__VU}-${Date.now()}` }, null, params);
}

// {token, userId} of a successful login response, or null.
export function session(res) {
  if (!isOk("login.request", res)) return null;
  const token = read(res, platform.login.token);
  if (!token) return null;
  return { token: String(token), userId: platform.login.user_id ? read(res, platform.login.user_id) : null };
}

export function createConversationRequest(token, title, participants, params) {
  return request("conversations.create", { title: title, participants: participants || [] }, token, params);
}

// Send one message: `ciphertext` already encoded per send.payload_encoding.
export function sendRequest(token, conversationId, clientMsgId, ciphertext, params) {
  const values = {
    conversation_id: conversationId,
    client_msg_id: clientMsgId,
    txn_id: `${clientMsgId}`.replace(/[^A-Za-z0-9._-]/g, "_"),
    ciphertext: ciphertext,
  };
  return request("send", values, token, params);
}

// After an accepted send: one "ACK {...}" console line with the platform's id of the message,
// its conversation and client id, the client-side proof (chaosmessaging.evidence.acks) that the
// platform accepted it. Returns the message id (null when the reply carries none).
export function recordAccepted(res, conversationId, clientMsgId) {
  const id = platform.send.extract && platform.send.extract.id ? read(res, platform.send.extract.id) : null;
  if (id === null) return null;
  console.log(
    "ACK " +
      JSON.stringify({
        message_id: String(id),
        conversation_id: conversationId,
        client_msg_id: clientMsgId,
        t: Date.now() / 1000,
      }),
  );
  return id;
}

// A request a script builds itself on the platform's `api` service (`authorization`: the
// header value lib/auth.js bearer() gives). Only for reference-specific scripts whose calls the
// platform file does not describe as operations.
export function rawRequest(method, path, authorization, body, tags) {
  const sendAs = platform.login.send_as;
  const headers = { "Content-Type": "application/json" };
  if (sendAs.header) headers[sendAs.header] = authorization;
  return http.request(method, `${platform.services.api.url}${path}`, body === undefined ? null : JSON.stringify(body), {
    headers: headers,
    tags: tags || {},
    responseType: "text",
  });
}
