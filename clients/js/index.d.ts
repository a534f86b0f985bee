// Type declarations of the Switchboard signaling client (src/signaling-client.js).
// The protocol they describe: docs/PROTOCOL.md in the Switchboard repository.

/** A STUN or TURN server for `RTCPeerConnection`; TURN entries carry credentials. */
export interface IceServer {
  urls: string[];
  username?: string;
  credential?: string;
}

/** The answer of `POST /auth/token`. */
export interface TokenGrant {
  /** The bearer token (a JWT) for {@link SignalingClient}. */
  token: string;
  /** Expiry, in seconds since the Unix epoch. */
  expiresAt: number;
  /** This session's peer id, `<userId>-<sessionId>`. */
  peerId: string;
  sessionId: string;
  /** STUN/TURN servers; empty when the server has none configured. */
  iceServers: IceServer[];
}

/**
 * A participant's metadata: a JSON object the app chooses (a display name, muted, hand
 * raised), at most `MAX_METADATA_BYTES` (4096 by default) as sent.
 */
export type Metadata = { [key: string]: unknown };

/** Options of {@link SignalingClient.fetchToken}. */
export interface TokenOptions {
  /** Initial metadata carried in the token: at most 1024 bytes as compact JSON. */
  metadata?: Metadata;
}

/** An ICE candidate as relayed (the JSON form of `RTCIceCandidate`). */
export interface CandidateInit {
  candidate?: string;
  sdpMid?: string | null;
  sdpMLineIndex?: number | null;
  usernameFragment?: string | null;
}

export interface Joined {
  type: 'joined';
  roomId: string;
  /** This client's peer id. */
  peerId: string;
  /** The others already in the room. */
  peers: string[];
  /** The metadata of every member that has some, this client's own included, by peer id. */
  metadata: Record<string, Metadata>;
  iceServers?: IceServer[];
}

export interface Resumed {
  type: 'resumed';
  roomId: string | null;
  peerId: string;
  peers: string[];
  /** As in {@link Joined}: every member's metadata, this client's own included. */
  metadata: Record<string, Metadata>;
  iceServers?: IceServer[];
}

export interface PeerJoined {
  type: 'peer_joined';
  peerId: string;
  /** Its metadata, when it has some. */
  metadata?: Metadata;
}

export interface PeerLeft {
  type: 'peer_left';
  peerId: string;
  /** e.g. `left`, `disconnected`, `timeout`, `replaced`, `removed`, `node_lost`. */
  reason: string;
}

/** A member's metadata changed (its `update`, or the app's backend, also for your own). */
export interface PeerUpdated {
  type: 'peer_updated';
  peerId: string;
  /** Its whole metadata now. */
  metadata: Metadata;
}

/** Application data from a member, or from the app's backend. */
export interface Message {
  type: 'message';
  /** The sender's peer id, set by the server, or `"server"` for the app's backend. */
  from: string;
  /** What the sender sent, verbatim. */
  data: unknown;
}

/** The app's backend removed this client from the room; the connection stays open. */
export interface Removed {
  type: 'removed';
  roomId: string;
}

/** The app's backend closed the room; the connection stays open. */
export interface RoomClosed {
  type: 'room_closed';
  roomId: string;
}

/** An offer or answer; `peerId` is the sender, set by the server. */
export interface Description {
  type: 'offer' | 'answer';
  peerId: string;
  sdp: string;
}

/** A trickled candidate; `peerId` is the sender, set by the server. */
export interface Candidate {
  type: 'ice-candidate';
  peerId: string;
  candidate: CandidateInit;
}

export interface ServerError {
  type: 'error';
  /**
   * e.g. `not_in_room`, `peer_not_found`, `room_full`, `rate_limited`, `unavailable`,
   * `invalid_message`.
   */
  code: string;
  message: string;
  /** The `id` the client gave the command that failed. */
  ref?: number;
}

export interface TokenRefresh {
  type: 'token';
  token: string;
  expiresAt: number;
}

export interface GoAway {
  type: 'goaway';
  reason: string;
  reconnectInMs: number;
}

export interface Pong {
  type: 'pong';
}

/** Every event the client dispatches, by name, with its `detail`. */
export interface SignalingEventMap {
  open: Record<string, never>;
  joined: Joined;
  resumed: Resumed;
  peer_joined: PeerJoined;
  peer_left: PeerLeft;
  peer_updated: PeerUpdated;
  offer: Description;
  answer: Description;
  'ice-candidate': Candidate;
  message: Message;
  removed: Removed;
  room_closed: RoomClosed;
  error: ServerError;
  token: TokenRefresh;
  goaway: GoAway;
  pong: Pong;
  reconnecting: { attempt: number; delayMs: number; code: number; reason: string };
  reconnected: { resumed: boolean };
  close: { code: number; reason: string; final: true };
}

/** A WebSocket constructor: the global one, undici's, or the `ws` package's. */
export type WebSocketConstructor = new (url: string, protocols: string[]) => WebSocket;

export interface SignalingClientOptions {
  /** HTTP(S) origin of the server; the page's origin by default (required outside a page). */
  baseUrl?: string;
  /** Reconnect and resume after drops (default true). */
  reconnect?: boolean;
  /** Gets a new token when the old one expired while disconnected (close 4001). */
  renewToken?: (() => Promise<string>) | null;
  /**
   * WebSocket implementation; `globalThis.WebSocket` by default. Node 20 has one only with
   * `--experimental-websocket`; Node 22 and later have it.
   */
  WebSocket?: WebSocketConstructor;
}

/** An Error from the client, with a machine-readable `code`. */
export interface SignalingError extends Error {
  /**
   * `token_refused`, `unavailable`, `unreachable`, `invalid_options`, or the server's
   * error code (`rate_limited`, `unauthorized`, …) from {@link SignalingClient.fetchToken}.
   */
  code: string;
  /** The HTTP status, when the server answered. */
  status?: number;
}

/** A connection to the Switchboard signaling service. */
export class SignalingClient extends EventTarget {
  /**
   * @param token Bearer token, e.g. from {@link SignalingClient.fetchToken}.
   * @throws {SignalingError} `invalid_options` without a base URL (outside a page) or a
   *   WebSocket implementation.
   */
  constructor(token: string, options?: SignalingClientOptions);

  /**
   * Requests a token from `POST /auth/token` (open issuance, or a page allowed by CORS);
   * `options.metadata` is the participant's initial metadata, carried in the token.
   */
  static fetchToken(baseUrl: string, userId: string, roomId?: string, options?: TokenOptions): Promise<TokenGrant>;

  /** The current token; replaced when the server pushes a refreshed one. */
  token: string;
  baseUrl: string;
  reconnect: boolean;
  renewToken: (() => Promise<string>) | null;
  /** The room joined last, or null. */
  roomId: string | null;
  /** This client's peer id, once joined or resumed. */
  peerId: string | null;
  /**
   * The others in the room, as far as this client knows: peer id → metadata (null when the
   * peer has none), in the order they joined. Kept up to date from `joined`, `resumed`,
   * `peer_joined`, `peer_updated` and `peer_left`; empty after `leave()`, `removed`,
   * `room_closed` and a final `close`.
   */
  peers: Map<string, Metadata | null>;
  /** True while the WebSocket is open. */
  readonly connected: boolean;

  /** Opens the WebSocket; rejects with a {@link SignalingError} if the first connection fails. */
  connect(): Promise<void>;
  /** Joins (or switches to) a room; the server answers `joined` or `error`. */
  join(roomId: string): void;
  /** Leaves the current room. */
  leave(): void;
  /**
   * Sets this client's metadata, replacing the whole object; the others get `peer_updated`.
   * Sent once connected if called before, and again if the server lost the session.
   * @throws {SignalingError} `invalid_options` when `metadata` is not a plain object.
   */
  update(metadata: Metadata): void;
  /**
   * Sends application data (any JSON value) to `peerId`, or to every other member of the
   * room without it; they get `message`.
   * @throws {SignalingError} `invalid_options` when `data` is undefined.
   */
  message(data: unknown, peerId?: string): void;
  sendOffer(peerId: string, sdp: string): void;
  sendAnswer(peerId: string, sdp: string): void;
  sendCandidate(peerId: string, candidate: CandidateInit | { toJSON(): CandidateInit }): void;
  /** Sends an application-level ping; the server answers `pong`. */
  ping(): void;
  /** Closes for good (no reconnect); a final `close` event with code 1000 follows. */
  close(): void;

  addEventListener<K extends keyof SignalingEventMap>(
    type: K,
    listener: (event: CustomEvent<SignalingEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  removeEventListener<K extends keyof SignalingEventMap>(
    type: K,
    listener: (event: CustomEvent<SignalingEventMap[K]>) => void,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
}
