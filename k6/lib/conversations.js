// Conversation helpers: create the conversations a load posts into (the API lets participants
// only post), and small wrappers for the conversation/participant endpoints.
import http from "k6/http";
import { config } from "./config.js";

const json = { "Content-Type": "application/json" };

function headers(authorization) {
  return Object.assign({ Authorization: authorization }, json);
}

// POST /v1/conversations; returns the k6 response (201 carries the conversation).
export function createConversationRequest(authorization, body, tags) {
  return http.post(`${config.apiUrl}/v1/conversations`, JSON.stringify(body || {}), {
    headers: headers(authorization),
    tags: Object.assign({ name: "conversation_create" }, tags || {}),
    responseType: "text",
  });
}

// The id of a new conversation whose creator is the token's user (throws on failure: a load
// must not start without somewhere to post).
export function createConversation(authorization, body) {
  const res = createConversationRequest(authorization, body, { phase: "setup" });
  if (res.status !== 201) {
    throw new Error(`creating a conversation at ${config.apiUrl} failed: HTTP ${res.status} ${res.body}`);
  }
  return res.json("id");
}

// For setup(): one conversation per token, created by that token's user (index-aligned with the
// tokens, as lib/auth.js bearer() hands them to VUs).
export function setupConversations(tokens) {
  return tokens.map((token, i) =>
    createConversation(`Bearer ${token}`, { title: `load ${config.runId} #${i}` }),
  );
}

export function request(method, path, authorization, body, tags) {
  return http.request(method, `${config.apiUrl}${path}`, body === undefined ? null : JSON.stringify(body), {
    headers: headers(authorization),
    tags: tags || {},
    responseType: "text",
  });
}

// This VU's conversation: the one setup() created for the VU's user (index-aligned with the
// tokens), or, after a 403 (the VU logged in again as another user), one of its own.
let vuConversationId = null;

export function vuConversation(data) {
  if (vuConversationId === null) vuConversationId = data.conversations[(__VU - 1) % data.conversations.length];
  return vuConversationId;
}

// Create a conversation for the VU's current user and post there from now on (true on success).
export function adoptOwnConversation(authorization) {
  const created = createConversationRequest(authorization, { title: `load ${config.runId} vu ${__VU}` });
  if (created.status !== 201) return false;
  vuConversationId = created.json("id");
  return true;
}
