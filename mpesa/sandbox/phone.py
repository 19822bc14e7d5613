"""The simulated handset: an HTML page per number showing the USSD prompts waiting for that customer.

Plain HTML with a little JavaScript that polls ``/sandbox/phone/<msisdn>/prompts`` every second, so a new
prompt appears without reloading. Without JavaScript the forms still work (POST, then a redirect back).
Any 4-digit PIN approves.
"""

from __future__ import annotations

from html import escape
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#eef1f4;color:#222}
header{background:#e60000;color:#fff;padding:12px 16px}
header h1{font-size:1.1rem;margin:0}header p{margin:4px 0 0;font-size:.9rem;opacity:.9}
main{padding:12px;max-width:480px;margin:0 auto}
.card{background:#fff;border-radius:10px;padding:14px;margin-bottom:12px;box-shadow:0 1px 3px #0002}
.amount{font-size:1.6rem;font-weight:600;margin:4px 0}.meta{color:#555;font-size:.9rem;margin:2px 0}
input{font-size:1.3rem;width:6em;padding:6px;letter-spacing:.3em;text-align:center}
button{font-size:1rem;padding:10px 14px;border:0;border-radius:6px;margin:8px 8px 0 0;cursor:pointer}
.ok{background:#0a7d32;color:#fff}.no{background:#666;color:#fff}.empty{color:#666;text-align:center}
#status{min-height:1.2em;color:#0a7d32}
"""

_SCRIPT = """
const msisdn = document.body.dataset.msisdn;
const api = "/sandbox/phone/" + msisdn + "/prompts";
const list = document.getElementById("prompts");
const status = document.getElementById("status");
let shown = "";
function esc(s){const d=document.createElement("div");d.textContent=String(s);return d.innerHTML;}
function card(p){
  return '<form class="card" method="post" data-id="'+esc(p.conversation_id)+'">'
   +'<div class="meta">Pay <b>'+esc(p.merchant)+'</b></div>'
   +'<div class="amount">'+esc(p.amount)+' MZN</div>'
   +'<div class="meta">Reference: '+esc(p.reference)+'</div>'
   +'<div class="meta">Time left: <span class="left" data-expires="'+(Date.now()+p.expires_in*1000)+'">'
   +Math.ceil(p.expires_in)+'</span> s</div>'
   +'<label>PIN <input name="pin" inputmode="numeric" pattern="[0-9]{4}" maxlength="4" autocomplete="off"></label><br>'
   +'<button class="ok" formaction="'+api+'/'+esc(p.conversation_id)+'/approve">Approve</button>'
   +'<button class="no" formaction="'+api+'/'+esc(p.conversation_id)+'/decline" formnovalidate>Decline</button>'
   +'</form>';
}
async function refresh(){
  try{
    const r = await fetch(api, {headers:{Accept:"application/json"}});
    const data = await r.json();
    const ids = data.prompts.map(p=>p.conversation_id).join(",");
    if(ids !== shown){
      shown = ids;
      list.innerHTML = data.prompts.length ? data.prompts.map(card).join("")
        : '<p class="empty">No payment requests. Waiting&hellip;</p>';
    }
  }catch(e){}
}
function tick(){
  for(const el of document.querySelectorAll(".left")){
    el.textContent = Math.max(0, Math.ceil((Number(el.dataset.expires)-Date.now())/1000));
  }
}
list.addEventListener("submit", async (ev)=>{
  ev.preventDefault();
  const form = ev.target, url = ev.submitter.getAttribute("formaction");
  const pin = form.querySelector("input[name=pin]").value;
  const r = await fetch(url, {method:"POST", headers:{"Content-Type":"application/json",Accept:"application/json"},
                              body: JSON.stringify({pin})});
  const data = await r.json();
  status.textContent = data.error ? data.error : (url.endsWith("/approve") ? "Approved." : "Declined.");
  shown = null; refresh();  // re-render even when the list is now empty
});
refresh(); setInterval(refresh, 1000); setInterval(tick, 250);
"""


def _card(msisdn: str, prompt: dict[str, Any]) -> str:
    base = f"/sandbox/phone/{escape(msisdn)}/prompts/{escape(prompt['conversation_id'])}"
    return (
        f'<form class="card" method="post" data-id="{escape(prompt["conversation_id"])}">'
        f'<div class="meta">Pay <b>{escape(prompt["merchant"])}</b></div>'
        f'<div class="amount">{escape(prompt["amount"])} MZN</div>'
        f'<div class="meta">Reference: {escape(prompt["reference"])}</div>'
        f'<div class="meta">Time left: <span class="left">{int(prompt["expires_in"] + 0.999)}</span> s</div>'
        '<label>PIN <input name="pin" inputmode="numeric" pattern="[0-9]{4}" maxlength="4" autocomplete="off">'
        "</label><br>"
        f'<button class="ok" formaction="{base}/approve">Approve</button>'
        f'<button class="no" formaction="{base}/decline" formnovalidate>Decline</button>'
        "</form>"
    )


def render_phone_page(msisdn: str, prompts: list[dict[str, Any]], *, masked: str) -> str:
    """The page for ``msisdn``; ``prompts`` as returned by the prompts JSON endpoint."""
    cards = "".join(_card(msisdn, p) for p in prompts) or '<p class="empty">No payment requests. Waiting&hellip;</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>M-Pesa phone {escape(masked)}</title><style>{_STYLE}</style></head>"
        f'<body data-msisdn="{escape(msisdn)}"><header><h1>M-Pesa (sandbox phone)</h1>'
        f"<p>Number {escape(msisdn)} &middot; any 4-digit PIN approves</p></header>"
        f'<main><p id="status" role="status"></p><div id="prompts">{cards}</div></main>'
        f"<script>{_SCRIPT}</script></body></html>"
    )


def render_index_page() -> str:
    """A form asking for the number whose phone to open."""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>M-Pesa sandbox phones</title><style>{_STYLE}</style></head><body>"
        "<header><h1>M-Pesa (sandbox phone)</h1><p>Open the phone of a customer number</p></header><main>"
        '<form class="card" onsubmit="location.href=\'/sandbox/phone/\'+this.n.value.trim();return false">'
        '<label>Number <input name="n" value="258840000000" style="width:9em;letter-spacing:0"></label>'
        '<button class="ok">Open</button></form>'
        '<p class="meta">Numbers ending in 00 wait for you here; see the scenario table in the README.</p>'
        "</main></body></html>"
    )
