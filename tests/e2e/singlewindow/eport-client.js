// A stand-in for the official page library ("中国电子口岸数据中心 JavaScript Library
// v1.3.9 for 客户端控件 v1.5.12", client.js), written for this test from the library's
// observable behaviour (docs/compat.md), not copied from it:
// - the address depends on the page's scheme: http -> ws://127.0.0.1:61232, anything
//   else -> wss://wss.singlewindow.cn:61231;
// - the socket is opened as soon as the library is loaded, while the page is parsed;
// - a call sends {"_method", "_id", "args"}; replies are routed by `_method`;
// - while the socket is connecting a call waits in 500 ms steps; a closed socket is
//   reopened. The real library gives up after ten waits with Err:Base60408 (and can
//   lose a call whose socket closed meanwhile); this one gives up the same way after
//   three connection attempts or ten waits, so a failing test ends in seconds.
(function (window) {
  "use strict";
  var URL_FOR_PAGE = window.location.protocol === "http:" ? "ws://127.0.0.1:61232" : "wss://wss.singlewindow.cn:61231";
  var WAIT_MS = 500;
  var MAX_WAITS = 10;
  var MAX_CONNECTS = 3;
  var ws = null;
  var nextId = 0;
  var connects = 0;
  var callbacks = {};

  function conn() {
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) return ws;
    connects += 1;
    ws = new window.WebSocket(URL_FOR_PAGE);
    ws.onmessage = function (event) {
      if (typeof event.data !== "string" || event.data.charAt(0) !== "{") return;
      var msg = JSON.parse(event.data);
      var callback = callbacks[msg._method];
      if (callback) {
        delete callbacks[msg._method];
        callback(msg._args);
      }
    };
    return ws;
  }

  function send(text, fail) {
    var waits = 0;
    (function attempt() {
      if (ws.readyState === 1) {
        ws.send(text);
        return;
      }
      if (waits >= MAX_WAITS || (ws.readyState > 1 && connects >= MAX_CONNECTS)) {
        fail({ Result: false, Data: [], Error: ["连接客户端控件服务失败,请重试.", "Err:Base60408"] });
        return;
      }
      waits += 1;
      if (ws.readyState > 1) conn();
      setTimeout(attempt, WAIT_MS);
    })();
  }

  conn();

  window.EportClient = {
    url: URL_FOR_PAGE,
    connects: function () {
      return connects;
    },
    invoke: function (method, args) {
      return new Promise(function (resolve) {
        callbacks[method] = resolve;
        send(JSON.stringify({ _method: method, _id: ++nextId, args: args || {} }), function (answer) {
          delete callbacks[method];
          resolve(answer);
        });
      });
    },
  };
})(window);
