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
  return compile(node, where, quote)(values);
}

// `node` compiled once into a function of `values`: a request is built at every iteration, and
// walking the template (secrets, placeholder regexps) each time cost about a seventh of k6's CPU
// per message (docs/performance.md). The secrets are read from k6's environment at compile time;
// a missing one still throws when the operation is first used.
function compile(node, where, quote) {
  if (Array.isArray(node)) {
    const parts = node.map((v, i) => compile(v, `${where}.${i}`, quote));
    return (values) => parts.map((f) => f(values));
  }
  if (node !== null && typeof node === "object") {
    const keys = Object.keys(node);
    const parts = keys.map((key) => compile(node[key], `${where}.${key}`, quote));
    return (values) => {
      const out = {};
      for (let i = 0; i < keys.length; i++) out[keys[i]] = parts[i](values);
      return out;
    };
  }
  if (typeof node !== "string") return () => node;
  const text = secretsFromEnv(node);
  const whole = WHOLE.exec(text);
  if (whole && !quote) return (values) => value(values, whole[1], where);
  // literal pieces at even indexes, placeholder names at odd ones
  const pieces = text.split(PLACEHOLDER);
  if (pieces.length === 1) return () => text;
  return (values) => {
    let out = pieces[0];
    for (let i = 1; i < pieces.length; i += 2) {
      const v = String(value(values, pieces[i], where));
      out += (quote ? encodeURIComponent(v) : v) + pieces[i + 1];
    }
    return out;
  };
}

// `node` compiled once into a function of `values` that returns its JSON text, exactly what
// JSON.stringify(compile(node)(values)) returns. Placeholders named in `raw` stand for strings
// that need no escaping by construction (base64 has no quote, backslash or control character):
// they are written between quotes as they are, because sobek's JSON.stringify walks a string
// character by character: 7 % of k6's CPU profile at 1,000 messages of 1 KiB per second.
export function compileJson(node, where, raw) {
  if (Array.isArray(node)) {
    const parts = node.map((v, i) => compileJson(v, `${where}.${i}`, raw));
    return (values) => {
      let out = "[";
      for (let i = 0; i < parts.length; i++) {
        const text = parts[i](values);
        out += (i ? "," : "") + (text === undefined ? "null" : text);
      }
      return out + "]";
    };
  }
  if (node !== null && typeof node === "object") {
    const keys = Object.keys(node);
    const names = keys.map((key) => JSON.stringify(key) + ":");
    const parts = keys.map((key) => compileJson(node[key], `${where}.${key}`, raw));
    return (values) => {
      let out = "";
      for (let i = 0; i < parts.length; i++) {
        const text = parts[i](values);
        if (text !== undefined) out += (out ? "," : "") + names[i] + text;
      }
      return "{" + out + "}";
    };
  }
  const f = compile(node, where, false);
  const whole = typeof node === "string" ? WHOLE.exec(node) : null;
  if (whole && raw && raw.indexOf(whole[1]) >= 0) {
    return (values) => {
      const v = f(values);
      const plain = typeof v === "string" && v.indexOf('"') < 0 && v.indexOf("\\") < 0;
      return plain ? '"' + v + '"' : JSON.stringify(v);
    };
  }
  return (values) => JSON.stringify(f(values));
}

// "$.a.b[0]" -> "a.b.0"; "$.items[*].id" -> "items.#.id"; "$" -> "@this"
export function selector(jsonpath) {
  const body = jsonpath.replace(/^\$\.?/, "");
  if (!body) return "@this";
  return body.replace(/\[\*\]/g, ".#").replace(/\[(\d+)\]/g, ".$1").replace(/^\./, "");
}

// The operation at a dotted place: "send", "login.request", "conversations.create", ...
// (Looked up once per VU and place: every request asks for its operation several times.)
const operations = {};

export function operation(where) {
  let node = operations[where];
  if (node) return node;
  node = platform;
  for (const part of where.split(".")) node = node === null || node === undefined ? undefined : node[part];
  if (!node) throw new Error(`the platform file of '${platform.name}' describes no ${where}`);
  operations[where] = node;
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
// `params` (tags, timeout...; `query`: extra query parameters, e.g. a page size). Returns the k6
// response (body as text unless `params.responseType` says otherwise).
export function request(where, values, token, params) {
  const t = template(where, operation(where));
  const headers = t.headers(values);
  let q = t.query(values);
  if (params && params.query) q = Object.assign(q, params.query);
  if (token && t.authenticated) {
    if (t.authHeader) headers[t.authHeader] = t.authValue(token);
    else q[t.authQuery] = token;
  }
  let body = null;
  if (t.body) {
    body = t.body(values);
    headers["Content-Type"] = "application/json";
  }
  const options = { responseType: "text" };
  if (params) for (const key of Object.keys(params)) if (key !== "query") options[key] = params[key];
  options.headers = params && params.headers ? Object.assign(headers, params.headers) : headers;
  options.tags = params && params.tags ? Object.assign({ name: where }, params.tags) : { name: where };
  return http.request(t.method, t.base + t.path(values) + query(q), body, options);
}

// Operation `where`'s headers, query, body and path, compiled once per VU.
const templates = {};

function template(where, op) {
  let t = templates[where];
  if (!t) {
    t = {
      headers: compile(op.headers || {}, `${where}.headers`),
      query: compile(op.query || {}, `${where}.query`),
      body:
        op.body !== null && op.body !== undefined
          ? compileJson(op.body, `${where}.body`, rawJson(where, op))
          : null,
      path: compile(op.path, `${where}.path`, true),
      // what every request of the operation repeats, read from the platform file once
      method: op.method,
      base: platform.services[op.service].url,
      authenticated: op.authenticated !== false,
    };
    const sendAs = (platform.login && platform.login.send_as) || {};
    if (sendAs.header) {
      // the token where the format says "{token}" (its first place, as String.replace did)
      const format = String(sendAs.format);
      const at = format.indexOf("{token}");
      const before = at < 0 ? format : format.slice(0, at);
      const after = at < 0 ? "" : format.slice(at + "{token}".length);
      t.authHeader = sendAs.header;
      t.authValue = at < 0 ? () => format : (token) => before + token + after;
    } else {
      t.authQuery = sendAs.query;
    }
    templates[where] = t;
  }
  return t;
}

// The placeholders of operation `where` whose values are JSON-safe strings: a send's base64
// ciphertext (lib/payload.js encodes it; "text" payloads are escaped as usual).
export function rawJson(where, op) {
  return where === "send" && op.payload_encoding === "base64" ? ["ciphertext"] : [];
}

// What `status` means for operation `where`: ok, forbidden, conflict, not_found, too_large,
// unauthorized, or "other".
const KINDS = ["ok", "forbidden", "conflict", "not_found", "too_large", "unauthorized"];
// where -> {status: kind}, the first kind that lists the status winning (built once per VU)
const outcomes = {};

export function outcome(where, status) {
  let table = outcomes[where];
  if (!table) {
    const op = operation(where);
    table = {};
    for (let k = KINDS.length - 1; k >= 0; k--) for (const s of op[KINDS[k]] || []) table[s] = KINDS[k];
    outcomes[where] = table;
  }
  return table[status] || "other";
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

// The value at `jsonpath` ($.a.b, [n], ["key"]) inside an already parsed value (null when absent).
export function pick(node, jsonpath) {
  const steps = /\.([^.[\]]+)|\[(\d+)\]|\["([^"\]]+)"\]/g;
  const body = String(jsonpath).replace(/^\$/, "");
  let v = node;
  let m;
  while ((m = steps.exec(body)) !== null) {
    if (v === null || v === undefined || typeof v !== "object") return null;
    v = v[m[1] !== undefined ? m[1] : m[2] !== undefined ? Number(m[2]) : m[3]];
  }
  return v === undefined ? null : v;
}

// The items of one page of list operation `where` (its page.items: "$.x[*]", "$.x.*" or "$.x").
export function items(where, res) {
  const path = operation(where).page.items;
  const each = /(\[\*\]|\.\*)$/.exec(path);
  const v = read(res, each ? path.slice(0, -each[1].length) || "$" : path);
  if (v === null) return [];
  if (Array.isArray(v)) return v;
  return each && typeof v === "object" ? Object.keys(v).map((k) => v[k]) : [v];
}

// Whether operation `where` uses placeholder {name} (path, query, headers or body).
export function uses(where, name) {
  const op = operation(where);
  return JSON.stringify([op.path, op.query || {}, op.headers || {}, op.body]).indexOf(`{${name}}`) >= 0;
}

// Every status that is an answer of `kind` ("ok", "forbidden", ...) to one of `wheres` (the
// operations the platform file describes), for http.expectedStatuses.
export function statusesOf(wheres, kinds) {
  const out = [];
  for (const where of wheres) {
    if (!has(where)) continue;
    for (const kind of kinds) for (const s of statuses(where, kind)) if (out.indexOf(s) < 0) out.push(s);
  }
  return out.sort((a, b) => a - b);
}

// The service that answers operation `where` (its services.<name> entry).
export function serviceOf(where) {
  return platform.services[operation(where).service];
}

// Response header `name` (any case), or null.
export function header(res, name) {
  const want = String(name).toLowerCase();
  for (const key of Object.keys(res.headers || {})) if (key.toLowerCase() === want) return res.headers[key];
  return null;
}

// "hit" or "miss" when the answer to `where` says it came from (or missed) the service's
// participant cache (services.<name>.cache_header), else null.
export function cacheAnswer(where, res) {
  const spec = serviceOf(where).cache_header;
  if (!spec) return null;
  const v = header(res, spec.name);
  if (v === null) return null;
  if (spec.hit.indexOf(v) >= 0) return "hit";
  if (spec.miss.indexOf(v) >= 0) return "miss";
  return null;
}

// Which process/instance answered `where` (services.<name>.served_by_header), or null.
export function servedBy(where, res) {
  const name = serviceOf(where).served_by_header;
  return name ? header(res, name) : null;
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
    ciphertext: ciphertext,
  };
  if (sendUsesTxnId === null) sendUsesTxnId = uses("send", "txn_id");
  if (sendUsesTxnId) values.txn_id = `${clientMsgId}`.replace(/[^A-Za-z0-9._-]/g, "_");
  return request("send", values, token, params);
}

let sendUsesTxnId = null;

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
