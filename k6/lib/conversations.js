// Conversation helpers: create the conversations a load posts into (the platform lets
// participants only post), through the platform file's conversations.create (lib/platform.js).
import { config } from "./config.js";
import * as platform from "./platform.js";

// conversations.create as the token's user; returns the k6 response.
export function createConversationRequest(token, body, tags) {
  const title = (body && body.title) || `load ${config.runId}`;
  return platform.createConversationRequest(token, title, (body && body.participants) || [], {
    tags: Object.assign({ name: "conversation_create" }, tags || {}),
  });
}

// The id of a new conversation whose creator is the token's user (throws on failure: a load
// must not start without somewhere to post).
export function createConversation(token, body) {
  const res = createConversationRequest(token, body, { phase: "setup" });
  if (!platform.isOk("conversations.create", res)) {
    throw new Error(`creating a conversation on ${platform.platform.name} failed: HTTP ${res.status} ${res.body}`);
  }
  return platform.extract("conversations.create", res, "id");
}

// For setup(): one conversation per token, created by that token's user (index-aligned with the
// tokens, as lib/auth.js hands them to VUs).
export function setupConversations(tokens) {
  return tokens.map((token, i) => createConversation(token, { title: `load ${config.runId} #${i}` }));
}

// This VU's conversation: the one setup() created for the VU's user (index-aligned with the
// tokens), or, after a "forbidden" (the VU logged in again as another user), one of its own.
let vuConversationId = null;

export function vuConversation(data) {
  if (vuConversationId === null) vuConversationId = data.conversations[(__VU - 1) % data.conversations.length];
  return vuConversationId;
}

// Create a conversation for the VU's current user and post there from now on (true on success).
export function adoptOwnConversation(token) {
  const created = createConversationRequest(token, { title: `load ${config.runId} vu ${__VU}` });
  if (!platform.isOk("conversations.create", created)) return false;
  vuConversationId = platform.extract("conversations.create", created, "id");
  return true;
}
