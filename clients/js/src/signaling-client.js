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
 * @typedef {Record<string, unknown>} Metadata A participant's metadata: a JSON object the app chooses.
 * @typedef {{metadata?: Metadata}} TokenOptions
 * @typedef {{type: 'joined', roomId: string, peerId: string, peers: string[], metadata: Record<string, Metadata>, iceServers?: IceServer[]}} Joined
 * @typedef {{type: 'resumed', roomId: string|null, peerId: string, peers: string[], metadata: Record<string, Metadata>, iceServers?: IceServer[]}} Resumed
 * @typedef {{type: 'peer_joined', peerId: string, metadata?: Metadata}} PeerJoined
 * @typedef {{type: 'peer_left', peerId: string, reason: string}} PeerLeft
 * @typedef {{type: 'peer_updated', peerId: string, metadata: Metadata}} PeerUpdated
 * @typedef {{type: 'message', from: string, data: unknown}} Message
 * @typedef {{type: 'removed', roomId: string}} Removed
 * @typedef {{type: 'room_closed', roomId: string}} RoomClosed
 * @typedef {{type: 'offer'|'answer', peerId: string, sdp: string}} Description
 * @typedef {{type: 'ice-candidate', peerId: string, candidate: RTCIceCandidateInit}} Candidate
 * @typedef {{type: 'error', code: string, message: string, ref?: number}} ServerError
 */

/**
 * A connection to the Switchboard signaling service.
 *
 * Events (each a CustomEvent whose `detail` is the server message or the object described):
 * - `joined`, `resumed`, `peer_joined`, `peer_left`, `peer_updated`, `offer`, `answer`,
 *   `ice-candidate`, `message`, `removed`, `room_closed`, `error`, `token`, `goaway`, `pong`:
 *   the server messages of the same type. `message` is application data from a member
 *   (`from` its peer id) or from the app's backend (`from` `"server"`). After `removed` (the
 *   backend took this client out of the room) or `room_closed` (it closed the room) the
 *   client is in no room (`roomId` null) and does not rejoin on reconnect; the connection
 *   stays open.
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
  // The metadata to restore after the server lost the session (a copy of the last `update`,
  // or of the backend's change to it), and whether the server may not have it yet.
  #metadata = null;
  #metadataUnsent = false;

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
    /**
     * The others in the room, as far as this client knows: peer id → metadata (null when the
     * peer has none), in the order they joined. Kept up to date from `joined`, `resumed`,
     * `peer_joined`, `peer_updated` and `peer_left`; empty after `leave()`, `removed`,
     * `room_closed` and a final `close`.
     * @type {Map<string, Metadata|null>}
     */
    this.peers = new Map();
  }

  /**
   * Requests a token from `POST /auth/token`.
   * @param {string} baseUrl HTTP(S) origin of the server.
   * @param {string} userId Display name / user id.
   * @param {string} [roomId] Restrict the token to this room.
   * @param {TokenOptions} [options] `metadata`: the participant's initial metadata, carried
   *   in the token (at most 1024 bytes as compact JSON).
   * @returns {Promise<TokenGrant>}
   * @throws {Error} with `code` `unreachable`, or the server's `error` code and message (and
   *   `status`) on a non-200 answer.
   */
  static async fetchToken(baseUrl, userId, roomId, { metadata } = {}) {
    const body = { userId };
    if (roomId) body.roomId = roomId;
    if (metadata !== undefined) body.metadata = metadata;
    let res;
    try {
      res = await fetch(new URL('/auth/token', baseUrl), {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
      });
    } catch {
      throw failure('unreachable', 'The server is unreachable. Check your network and try again.');
    }
    const answer = await res.json().catch(() => ({}));
    if (!res.ok) throw failure(answer.error, answer.message || `The server answered ${res.status}.`, { status: res.status });
    return answer;
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
    this.peers.clear();
  }

  /**
   * Sets this client's participant metadata, replacing the whole object (send every field
   * each time). The others in the room get `peer_updated`; there is no reply unless it is
   * refused (`error` `invalid_message`, e.g. over the server's size limit). Outside a room
   * the server keeps it for the next join. Called while disconnected, it is sent once
   * connected; and the client sends it again if the server lost the session.
   * @param {Metadata} metadata A plain object of JSON values.
   * @throws {Error} with `code` `invalid_options` when `metadata` is not a plain object.
   */
  update(metadata) {
    const proto = metadata !== null && typeof metadata === 'object' ? Object.getPrototypeOf(metadata) : undefined;
    if (proto !== Object.prototype && proto !== null) {
      throw failure('invalid_options', 'update() takes a plain object, e.g. {name: "Ann", muted: true}.');
    }
    let copy;
    try {
      // A copy, so that changing the object afterwards does not change what a reconnect sends.
      copy = JSON.parse(JSON.stringify(metadata));
    } catch (e) {
      throw failure('invalid_options', `update() takes JSON values only: ${e.message}`);
    }
    this.#metadata = copy;
    this.#sendMetadata();
  }

  /**
   * Sends application data to one member of the room, or without `peerId` to every other
   * member; they get `message` `{from, data}`. Errors (`not_in_room`, `peer_not_found`)
   * come back as `error` events.
   * @param {unknown} data Any JSON value; it arrives verbatim.
   * @param {string} [peerId] The recipient; everyone else in the room when omitted.
   * @throws {Error} with `code` `invalid_options` when `data` is undefined.
   */
  message(data, peerId) {
    // JSON has no undefined: the field would vanish and the server refuse the message.
    if (data === undefined) throw failure('invalid_options', 'message() needs data: any JSON value.');
    this.#send(peerId === undefined || peerId === null ? { type: 'message', data } : { type: 'message', peerId, data });
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
        // An update() made before the first connect.
        else if (this.#metadataUnsent) this.#sendMetadata();
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
      this.peers.clear();
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
  // Returns whether it went out.
  #send(message) {
    if (!this.connected) return false;
    this.#ws.send(JSON.stringify({ ...message, id: ++this.#nextId }));
    return true;
  }

  // Sends the remembered metadata, and notes whether it still has to go out once connected.
  #sendMetadata() {
    if (this.#metadata) this.#metadataUnsent = !this.#send({ type: 'update', metadata: this.#metadata });
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
      // A lost session took the membership with it; `joined` brings the new one.
      if (!resumed) this.peers.clear();
      this.#emit('reconnected', { resumed });
      // The server lost the session (it restarted, or the grace ran out): restore the
      // metadata first, so that it travels with the join, then join again. A resumed session
      // kept its metadata, unless an update() was made while disconnected.
      if (!resumed || this.#metadataUnsent) this.#sendMetadata();
      if (!resumed && this.roomId) this.join(this.roomId);
    }
    this.#track(msg);
    // Reconnect on the server's hint, spread by the server so a node's clients do not all
    // arrive elsewhere at once.
    if (msg.type === 'goaway') this.#hint = Number(msg.reconnectInMs) || 0;
    this.#emit(msg.type, msg);
  }

  // Keeps the token, peer id, room and `peers` in step with what the server says.
  #track(msg) {
    switch (msg.type) {
      case 'token':
        if (msg.token) this.token = msg.token;
        break;
      case 'joined':
      case 'resumed': {
        [this.peerId, this.roomId] = [msg.peerId, msg.roomId ?? null];
        const metadata = msg.metadata ?? {};
        this.peers = new Map((msg.peers ?? []).map((id) => [id, metadata[id] ?? null]));
        break;
      }
      case 'peer_joined':
        this.peers.set(msg.peerId, msg.metadata ?? null);
        break;
      case 'peer_updated':
        // The backend changed this client's own metadata: that is now the one to restore.
        if (msg.peerId === this.peerId) this.#metadata = msg.metadata;
        else this.peers.set(msg.peerId, msg.metadata ?? null);
        break;
      case 'peer_left':
        this.peers.delete(msg.peerId);
        break;
      case 'removed':
      case 'room_closed':
        // Out of the room by the backend's decision: a reconnect must not rejoin it.
        this.roomId = null;
        this.peers.clear();
        break;
    }
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
