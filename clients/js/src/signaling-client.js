// Switchboard signaling client: one WebSocket, JSON text frames, events named after message
// types, and automatic reconnect with session resume. No dependencies, no build step.
// Runs in browsers and in Node (20 with --experimental-websocket, 22 and later as is, or any
// version given a WebSocket implementation in `options.WebSocket`).

const SUBPROTOCOL = 'switchboard.v1';
// WebSocket.OPEN, the same in every implementation (browsers, undici, ws).
const OPEN = 1;
const failure = (code, message, extra = {}) => Object.assign(new Error(message), { code, ...extra });

// Close codes after which reconnecting can help. 4001 (expired token) needs a fresh token.
const RETRY = new Set([1001, 1005, 1006, 1011, 1012, 1013, 4001, 4003]);
// Close codes that end the session for good, in plain words.
const FINAL = {
  1000: 'The connection was closed.',
  1008: 'The server closed the connection: access was revoked or the client sent too much.',
  1009: 'A message was too big for the server.',
  4004: 'This session was opened in another tab or window.',
};

/**
 * @typedef {{urls: string[], username?: string, credential?: string}} IceServer
 * @typedef {{token: string, expiresAt: number, peerId: string, sessionId: string, iceServers: IceServer[]}} TokenGrant
 * @typedef {{type: 'joined', roomId: string, peerId: string, peers: string[], iceServers?: IceServer[]}} Joined
 * @typedef {{type: 'resumed', roomId: string|null, peerId: string, peers: string[], iceServers?: IceServer[]}} Resumed
 * @typedef {{type: 'offer'|'answer', peerId: string, sdp: string}} Description
 * @typedef {{type: 'ice-candidate', peerId: string, candidate: RTCIceCandidateInit}} Candidate
 * @typedef {{type: 'error', code: string, message: string, ref?: number}} ServerError
 */

/**
 * A connection to the Switchboard signaling service.
 *
 * Events (each a CustomEvent whose `detail` is the server message or the object described):
 * - `joined`, `resumed`, `peer_joined`, `peer_left`, `offer`, `answer`, `ice-candidate`,
 *   `error`, `token`, `goaway`, `pong`: the server messages of the same type.
 * - `open`: the socket is open (first connect and every reconnect).
 * - `reconnecting` `{attempt, delayMs, code, reason}`: the connection dropped (or the node is
 *   draining) and a new one starts after `delayMs`.
 * - `reconnected` `{resumed}`: a new connection is up. `resumed: true` follows a `resumed`
 *   message: same peer id, same room, every queued message delivered after it. With `false`
 *   the session was lost (e.g. the server restarted) and the client joins its room again,
 *   so a `joined` follows; rebuild peer connections then.
 * - `close` `{code, reason, final: true}`: the connection ended for good (left, replaced,
 *   revoked, or reconnecting is off).
 */
export class SignalingClient extends EventTarget {
  #ws = null;
  #nextId = 0;
  #attempt = 0;
  #timer = 0;
  #stopped = false;
  #hint = null;
  #awaitingFirst = false;
  #WebSocket;

  /**
   * @param {string} token Bearer token, e.g. from {@link SignalingClient.fetchToken}.
   * @param {object} [options]
   * @param {string} [options.baseUrl] HTTP(S) origin of the server; the page's origin by default.
   * @param {boolean} [options.reconnect] Reconnect and resume after drops (default true).
   * @param {() => Promise<string>} [options.renewToken] Gets a new token when the old one
   *   expired while disconnected (close 4001); without it such a close is final.
   * @param {typeof WebSocket} [options.WebSocket] WebSocket implementation; the global one by
   *   default (Node 20 has it only with --experimental-websocket; or pass e.g. `ws`'s).
   * @throws {Error} with `code` `invalid_options` when there is no base URL (outside a page)
   *   or no WebSocket implementation.
   */
  constructor(
    token,
    { baseUrl = globalThis.location?.origin, reconnect = true, renewToken = null, WebSocket = globalThis.WebSocket } = {},
  ) {
    super();
    if (!baseUrl) {
      throw failure('invalid_options', 'Pass options.baseUrl, the http(s) origin of the Switchboard server: there is no page origin here.');
    }
    if (typeof WebSocket !== 'function') {
      throw failure(
        'invalid_options',
        'No WebSocket implementation: on Node 20 run node with --experimental-websocket (Node 22 and later have one), or pass options.WebSocket.',
      );
    }
    this.#WebSocket = WebSocket;
    /** The current token; replaced when the server pushes a refreshed one. */
    this.token = token;
    this.baseUrl = baseUrl;
    this.reconnect = reconnect;
    this.renewToken = renewToken;
    /** The room joined last, or null. */
    this.roomId = null;
    /** This client's peer id, once joined or resumed. */
    this.peerId = null;
  }

  /**
   * Requests a token from `POST /auth/token`.
   * @param {string} baseUrl HTTP(S) origin of the server.
   * @param {string} userId Display name / user id.
   * @param {string} [roomId] Restrict the token to this room.
   * @returns {Promise<TokenGrant>}
   * @throws {Error} with `code` `unreachable`, or the server's `error` code and message (and
   *   `status`) on a non-200 answer.
   */
  static async fetchToken(baseUrl, userId, roomId) {
    let res;
    try {
      res = await fetch(new URL('/auth/token', baseUrl), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(roomId ? { userId, roomId } : { userId }),
      });
    } catch {
      throw failure('unreachable', 'The server is unreachable. Check your network and try again.');
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw failure(body.error, body.message || `The server answered ${res.status}.`, { status: res.status });
    return body;
  }

  /**
   * Opens the WebSocket. Resolves once open; rejects with an Error whose `code` is
   * `token_refused`, `unavailable` or `unreachable` if the first connection fails.
   * @returns {Promise<void>}
   */
  connect() {
    this.#stopped = false;
    return this.#open();
  }

  /** Joins (or switches to) a room; the server answers `joined` or `error`. @param {string} roomId */
  join(roomId) {
    this.roomId = roomId;
    this.#send({ type: 'join', roomId });
  }

  /** Leaves the current room. */
  leave() {
    if (this.roomId) this.#send({ type: 'leave', roomId: this.roomId });
    this.roomId = null;
  }

  /** Relays an SDP offer. @param {string} peerId target peer @param {string} sdp SDP text */
  sendOffer(peerId, sdp) {
    this.#send({ type: 'offer', peerId, sdp });
  }

  /** Relays an SDP answer. @param {string} peerId target peer @param {string} sdp SDP text */
  sendAnswer(peerId, sdp) {
    this.#send({ type: 'answer', peerId, sdp });
  }

  /** Relays a trickled ICE candidate. @param {string} peerId @param {RTCIceCandidate|RTCIceCandidateInit} candidate */
  sendCandidate(peerId, candidate) {
    const init = typeof candidate.toJSON === 'function' ? candidate.toJSON() : candidate;
    this.#send({ type: 'ice-candidate', peerId, candidate: init });
  }

  /** Sends an application-level ping; the server answers `pong`. */
  ping() {
    this.#send({ type: 'ping' });
  }

  /** Closes for good (no reconnect); a final `close` event with code 1000 follows. */
  close() {
    this.#stopped = true;
    clearTimeout(this.#timer);
    const ws = this.#ws;
    if (ws) ws.close(1000, 'bye');
    else this.#emit('close', { code: 1000, reason: 'bye', final: true });
  }

  /** True while the WebSocket is open. */
  get connected() {
    return this.#ws?.readyState === OPEN;
  }

  #open() {
    const url = new URL('/ws/signal', this.baseUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new this.#WebSocket(url.href, [SUBPROTOCOL, 'bearer.' + this.token]);
    this.#ws = ws;
    return new Promise((resolve, reject) => {
      let opened = false;
      ws.onopen = () => {
        opened = true;
        // A resumed session speaks first (`resumed`); otherwise the pong comes first.
        this.#awaitingFirst = this.#attempt > 0;
        if (this.#awaitingFirst) this.ping();
        this.#emit('open', {});
        resolve();
      };
      ws.onmessage = (e) => this.#receive(e.data);
      let refused = false;
      // A failed upgrade ends in `error` then `close` in browsers, but only in `error` in
      // Node 20's WebSocket: handle whichever comes first, once.
      const refuse = () => {
        if (opened || refused) return;
        refused = true;
        if (this.#ws === ws) this.#ws = null;
        this.#whyRefused().then((error) => {
          if (this.#attempt === 0) return reject(error);
          if (error.code === 'token_refused') return this.#closed(4001, error.message);
          this.#closed(1006, error.message);
        });
      };
      ws.onerror = refuse;
      ws.onclose = (e) => {
        if (!opened) return refuse();
        if (this.#ws === ws) this.#ws = null;
        this.#closed(e.code, e.reason);
      };
    });
  }

  // Decides what a closed connection means: reconnect (with backoff) or stop.
  #closed(code, reason) {
    if (this.#stopped || !this.reconnect || !RETRY.has(code) || (code === 4001 && !this.renewToken)) {
      this.#stopped = true;
      return this.#emit('close', { code, reason: reason || FINAL[code] || `Closed (code ${code}).`, final: true });
    }
    const attempt = ++this.#attempt;
    const backoff = Math.min(30000, 500 * 2 ** (attempt - 1)) * (0.5 + Math.random() / 2);
    const delayMs = Math.round(this.#hint ?? backoff);
    this.#hint = null;
    this.#emit('reconnecting', { attempt, delayMs, code, reason });
    this.#timer = setTimeout(async () => {
      if (this.#stopped) return;
      if (code === 4001) {
        try {
          this.token = await this.renewToken();
        } catch (e) {
          return this.#closed(1006, e.message);
        }
      }
      this.#open().catch(() => {});
    }, delayMs);
  }

  // Sends a command with an `id` (echoed as `ref` in errors); dropped while disconnected.
  #send(message) {
    if (this.connected) this.#ws.send(JSON.stringify({ ...message, id: ++this.#nextId }));
  }

  #receive(data) {
    let msg = null;
    try {
      msg = JSON.parse(data);
    } catch {}
    if (typeof msg?.type !== 'string') return;
    if (this.#awaitingFirst) {
      this.#awaitingFirst = false;
      this.#attempt = 0;
      const resumed = msg.type === 'resumed';
      this.#emit('reconnected', { resumed });
      // The server lost the session (it restarted, or the grace ran out): join again.
      if (!resumed && this.roomId) this.join(this.roomId);
    }
    if (msg.type === 'token' && msg.token) this.token = msg.token;
    if (msg.type === 'joined' || msg.type === 'resumed') [this.peerId, this.roomId] = [msg.peerId, msg.roomId ?? null];
    // Reconnect on the server's hint, spread by the server so a node's clients do not all
    // arrive elsewhere at once.
    if (msg.type === 'goaway') this.#hint = Number(msg.reconnectInMs) || 0;
    this.#emit(msg.type, msg);
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  // A browser hides why a WebSocket upgrade failed, so ask the server whether the token is good.
  async #whyRefused() {
    try {
      const res = await fetch(new URL('/auth/validate', this.baseUrl), {
        headers: { Authorization: 'Bearer ' + this.token },
      });
      if (res.status === 401) {
        const { message = '' } = await res.json().catch(() => ({}));
        return failure('token_refused', `The server refused the token. ${message}`.trim());
      }
      return failure('unavailable', 'The signaling service is busy or restarting. Try again shortly.');
    } catch {
      return failure('unreachable', 'The server is unreachable. Check your network and try again.');
    }
  }
}
