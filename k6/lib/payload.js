// Random identifiers and opaque "ciphertext" for message payloads.
import { randomBytes, sha256 } from "k6/crypto";
import encoding from "k6/encoding";

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
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

// `size` random bytes as base64 plus their SHA-256 (hex), so a probe can prove the bytes stored
// are the bytes sent.
export function randomPayload(size) {
  const bytes = randomBytes(size);
  return { base64: encoding.b64encode(bytes, "std"), sha256: sha256(bytes, "hex") };
}
