// The page's first call, as the card login does it on the Single Window: card number,
// signing certificate, then the server's challenge signed with the card
// (SpcSignRandom with the PIN). What came back is shown and reported to the test server.
(function () {
  "use strict";
  var body = document.body;
  var report = {
    load: Number(body.dataset.load),
    challenge: body.dataset.challenge,
    bridgedAtStart: Boolean(window.WebSocket.__cardAgentBridge),
    url: window.EportClient.url,
    ok: false,
  };
  var started = performance.now();
  function show(id, text) {
    document.getElementById(id).textContent = text;
  }
  function failed(args) {
    var error = (args && args.Error) || [];
    report.error = error;
    throw new Error(error.join(" "));
  }
  function call(method, args) {
    return window.EportClient.invoke(method, args).then(function (answer) {
      return answer && answer.Result ? answer.Data : failed(answer);
    });
  }
  show("socket-url", window.EportClient.url);
  call("cus-sec_SpcGetCardID")
    .then(function (data) {
      report.cardId = data[0];
      show("card-id", data[0]);
      return call("cus-sec_SpcGetSignCertAsPEM");
    })
    .then(function (data) {
      report.certificate = data[0];
      show("cert", data[0].slice(0, 48) + "…（" + data[0].length + " 字符）");
      return call("cus-sec_SpcSignRandom", { random: report.challenge, passwd: body.dataset.pin });
    })
    .then(function (data) {
      report.signature = data[0];
      report.certificateNumber = data[1];
      report.ok = true;
      show("signature", data[0]);
      show("state", "已通过电子口岸卡完成登录签名");
      document.getElementById("state").className = "good";
    })
    .catch(function (err) {
      show("error", String(err.message || err));
      show("state", "无法使用电子口岸卡");
      document.getElementById("state").className = "bad";
    })
    .then(function () {
      report.connects = window.EportClient.connects();
      report.elapsedMs = Math.round(performance.now() - started);
      return fetch("/report", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(report) });
    });
})();
