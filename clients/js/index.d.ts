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
  iceServers?: IceServer[];
}

export interface Resumed {
  type: 'resumed';
  roomId: string | null;
  peerId: string;
  peers: string[];
  iceServers?: IceServer[];
}

export interface PeerJoined {
  type: 'peer_joined';
  peerId: string;
}

export interface PeerLeft {
  type: 'peer_left';
  peerId: string;
  /** e.g. `left`, `disconnected`, `timeout`, `replaced`, `node_lost`. */
  reason: string;
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
  /** e.g. `not_in_room`, `peer_not_found`, `room_full`, `rate_limited`, `unavailable`. */
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
  offer: Description;
  answer: Description;
  'ice-candidate': Candidate;
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

  /** Requests a token from `POST /auth/token` (open issuance, or a page allowed by CORS). */
  static fetchToken(baseUrl: string, userId: string, roomId?: string): Promise<TokenGrant>;

  /** The current token; replaced when the server pushes a refreshed one. */
  token: string;
  baseUrl: string;
  reconnect: boolean;
  renewToken: (() => Promise<string>) | null;
  /** The room joined last, or null. */
  roomId: string | null;
  /** This client's peer id, once joined or resumed. */
  peerId: string | null;
  /** True while the WebSocket is open. */
  readonly connected: boolean;

  /** Opens the WebSocket; rejects with a {@link SignalingError} if the first connection fails. */
  connect(): Promise<void>;
  /** Joins (or switches to) a room; the server answers `joined` or `error`. */
  join(roomId: string): void;
  /** Leaves the current room. */
  leave(): void;
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
