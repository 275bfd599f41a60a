// Random identifiers and opaque "ciphertext" for message payloads.
import { randomBytes, sha256 } from "k6/crypto";
import encoding from "k6/encoding";

// Two hex digits per byte value, built once: sobek runs Array.from's iterator protocol and a
// closure per byte slowly enough to show in k6's CPU profile at 1,000 messages/s.
const HEX = [];
for (let i = 0; i < 256; i++) HEX.push((i < 16 ? "0" : "") + i.toString(16));

function hex(buffer) {
  const bytes = new Uint8Array(buffer);
  let out = "";
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]];
  return out;
}

// RFC 4122 version 4 UUID from k6's CSPRNG.
export function uuidv4() {
  const b = new Uint8Array(randomBytes(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = hex(b.buffer);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

export function randomHex(bytes) {
  return hex(randomBytes(bytes));
}

// `size` random bytes, base64 (std alphabet, padded) as the API expects for `ciphertext`.
export function randomBase64(size) {
  return encoding.b64encode(randomBytes(size), "std");
}

// `size` random bytes as base64 plus, with `digest`, their SHA-256 (hex), so a probe can prove
// the bytes stored are the bytes sent (sha256 is null without `digest`).
export function randomPayload(size, digest = true) {
  const bytes = randomBytes(size);
  return { base64: encoding.b64encode(bytes, "std"), sha256: digest ? sha256(bytes, "hex") : null };
}
