// Switchboard signaling client: one WebSocket, JSON text frames, events named after message types.

const SUBPROTOCOL = 'switchboard.v1';
const failure = (code, message, extra = {}) => Object.assign(new Error(message), { code, ...extra });

/**
 * A connection to the Switchboard signaling server.
 *
 * Dispatches a CustomEvent per server message, named after its `type` (`joined`, `peer_joined`,
 * `peer_left`, `offer`, `answer`, `ice-candidate`, `pong`, `error`, `token`) with the message as
 * `detail`, plus `open` and `close` (detail `{code, reason}`).
 */
export class SignalingClient extends EventTarget {
  #ws = null;
  #nextId = 0;

  /**
   * @param {string} token Bearer token from {@link SignalingClient.fetchToken}.
   * @param {string} [baseUrl] HTTP(S) origin of the server; defaults to the page's origin.
   */
  constructor(token, baseUrl = location.origin) {
    super();
    /** The current token; replaced when the server sends a refreshed one. */
    this.token = token;
    this.baseUrl = baseUrl;
    /** The room last joined, or null. */
    this.roomId = null;
  }

  /**
   * Requests a token from `POST /auth/token`.
   * @param {string} baseUrl HTTP(S) origin of the server.
   * @param {string} userId Display name / user id.
   * @param {string} [roomId] Restrict the token to this room.
   * @returns {Promise<{token: string, expiresAt: number, peerId: string, sessionId: string}>}
   * @throws {Error} with the server's message (and `code`, `status`) on a non-200 answer.
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
      throw failure('unreachable', 'The server is unreachable.');
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) throw failure(body.error, body.message || `The server answered ${res.status}.`, { status: res.status });
    return body;
  }

  /**
   * Opens the WebSocket. Resolves once open; rejects with a plain-words Error (`code`
   * `token_refused` or `unreachable`) if the connection fails before opening.
   * @returns {Promise<void>}
   */
  connect() {
    if (this.#ws) Object.assign(this.#ws, { onclose: null, onerror: null, onmessage: null }).close(1000); // replaced
    const url = new URL('/ws/signal', this.baseUrl);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(url, [SUBPROTOCOL, 'bearer.' + this.token]);
    this.#ws = ws;
    return new Promise((resolve, reject) => {
      let state = 'connecting';
      ws.onopen = () => {
        state = 'open';
        resolve();
        this.#emit('open', {});
      };
      ws.onmessage = (e) => this.#receive(e.data);
      ws.onerror = () => {
        if (state !== 'connecting') return;
        state = 'failed';
        this.#whyRefused().then(reject);
      };
      ws.onclose = (e) => {
        if (this.#ws === ws) this.#ws = null;
        if (state === 'open') this.#emit('close', { code: e.code, reason: e.reason });
        else ws.onerror?.();
      };
    });
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

  /** Closes the connection normally (a `close` event with code 1000 follows). */
  close() {
    this.#ws?.close(1000, 'bye');
  }

  /** True while the WebSocket is open. */
  get connected() {
    return this.#ws?.readyState === WebSocket.OPEN;
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
    if (msg.type === 'token' && msg.token) this.token = msg.token;
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
      if (res.status !== 401) return failure('failed', 'The signaling connection could not be opened.');
      const { message = '' } = await res.json().catch(() => ({}));
      return failure('token_refused', `The server refused the token. ${message}`.trim());
    } catch {
      return failure('unreachable', 'The server is unreachable.');
    }
  }
}
