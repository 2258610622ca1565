// A minimal client of the official E-Port client protocol (the one Single Window pages
// use): connect to ws://127.0.0.1:61232, wait for the greeting, send
// {"_method", "_id", "args"}, read {"_id", "_method", "_status", "_args": {Result,
// Data, Error}}. Replies are routed by _method, like the official JavaScript.

export class OfficialError extends Error {
  constructor(message, code) {
    super(message);
    this.code = code;
  }
}

export class OfficialClient {
  #url;
  #ws = null;
  #opened = null;
  #nextId = 1;
  #waiting = new Map(); // _method -> [{resolve, reject}]

  constructor(url) {
    this.#url = url;
  }

  connect(timeoutMs = 5000) {
    if (this.#opened) return this.#opened;
    this.#opened = new Promise((resolve, reject) => {
      const ws = new WebSocket(this.#url);
      this.#ws = ws;
      const timer = setTimeout(() => {
        reject(new OfficialError("连接电子口岸客户端超时", "Err:Base60408"));
        ws.close();
      }, timeoutMs);
      ws.onmessage = (event) => {
        let msg;
        try {
          msg = JSON.parse(event.data);
        } catch {
          return;
        }
        if (msg._method === "open") {
          clearTimeout(timer);
          resolve();
          return;
        }
        const queue = this.#waiting.get(msg._method);
        const entry = queue && queue.shift();
        if (!entry) return;
        const args = msg._args || {};
        if (args.Result) entry.resolve(args.Data || []);
        else {
          const error = Array.isArray(args.Error) ? args.Error : [];
          entry.reject(new OfficialError(error[0] || "操作失败", error[1] || ""));
        }
      };
      ws.onclose = () => {
        clearTimeout(timer);
        this.#opened = null;
        reject(new OfficialError("无法连接电子口岸客户端", "Err:Base60408"));
        for (const queue of this.#waiting.values()) {
          for (const entry of queue.splice(0)) {
            entry.reject(new OfficialError("与电子口岸客户端的连接已断开", "Err:Base60408"));
          }
        }
      };
    });
    return this.#opened;
  }

  async call(method, args = {}) {
    await this.connect();
    return new Promise((resolve, reject) => {
      if (!this.#waiting.has(method)) this.#waiting.set(method, []);
      this.#waiting.get(method).push({ resolve, reject });
      this.#ws.send(JSON.stringify({ _method: method, _id: this.#nextId++, args }));
    });
  }

  close() {
    if (this.#ws) this.#ws.close();
    this.#ws = null;
    this.#opened = null;
  }
}
