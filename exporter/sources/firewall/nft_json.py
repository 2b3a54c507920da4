"""The parser of ``nft -j`` JSON: Docker 29's native nftables backend (``docker-bridges``)."""

from __future__ import annotations

from typing import Any

from exporter.sources.firewall.rules import (
    DIRECT_ACCESS,
    DNAT,
    MASQUERADE,
    NFT_DOCKER_TABLE,
    NFT_FAMILIES,
    UNPUBLISHED_PORT,
    DropRule,
    NatRule,
    Ruleset,
)

# Docker's drop rules by their comment; the bridge is in the chain's name (after "__") or in the
# rule's `iifname != <bridge>` match.
NFT_DROPS = {"UNPUBLISHED PORT DROP": UNPUBLISHED_PORT, "DROP DIRECT ACCESS": DIRECT_ACCESS}


def parse_nft_json(doc: dict[str, Any], backend: str = "nftables") -> Ruleset:
    """Parse ``nft -j list ...`` output; only Docker's ``docker-bridges`` tables are read."""
    out = Ruleset(backend=backend)
    for item in doc.get("nftables", ()):
        if "chain" in item:
            c = item["chain"]
            if c.get("table") == NFT_DOCKER_TABLE and c.get("family") in NFT_FAMILIES:
                out.chains.setdefault((f"{c['family']} {NFT_DOCKER_TABLE}", c.get("name", "")), 0)
                out.docker_families.add(NFT_FAMILIES[c["family"]])
        elif "rule" in item:
            r = item["rule"]
            if r.get("table") != NFT_DOCKER_TABLE or r.get("family") not in NFT_FAMILIES:
                continue
            key = (f"{r['family']} {NFT_DOCKER_TABLE}", r.get("chain", ""))
            out.chains[key] = out.chains.get(key, 0) + 1
            try:
                if r.get("comment") in NFT_DROPS:
                    out.drops.append(_nft_drop(r, NFT_FAMILIES[r["family"]]))
                    continue
                rule = _nft_rule(r["expr"], NFT_FAMILIES[r["family"]])
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                out.unparsed += 1
                continue
            if rule is not None:
                out.rules.append(rule)
    return out


def _nft_drop(rule: dict[str, Any], family: str) -> DropRule:
    """A drop rule of Docker's, its bridge and its counter's packets."""
    bridge = rule["chain"].partition("__")[2]
    packets = 0
    for e in rule["expr"]:
        ((kind, body),) = e.items()
        if kind == "counter":
            packets = int(body["packets"])
        elif kind == "match" and body["left"].get("meta", {}).get("key") == "iifname":
            bridge = body["right"]
    if not bridge:
        raise ValueError("a drop rule without its bridge")
    return DropRule(family, NFT_DROPS[rule["comment"]], bridge, packets)


def _nft_rule(exprs: list[dict[str, Any]], family: str) -> NatRule | None:
    fields: dict[str, Any] = {"family": family}
    for e in exprs:
        ((kind, body),) = e.items()
        if kind == "match":
            _nft_match(body, fields)
        elif kind == "counter":
            fields["packets"] = int(body["packets"])
        elif kind == "dnat":
            fields["action"] = DNAT
            fields["to_addr"] = body["addr"]
            fields["to_ports"] = _nft_ports(body.get("port", 0))
        elif kind == "masquerade":
            fields["action"] = MASQUERADE
    return NatRule(**fields) if "action" in fields else None


def _nft_match(body: dict[str, Any], fields: dict[str, Any]) -> None:
    left, right, negated = body["left"], body["right"], body["op"] == "!="
    if "meta" in left and left["meta"]["key"] == "oifname":
        fields["out_iface"], fields["out_negated"] = right, negated
    elif "payload" in left:
        protocol, what = left["payload"]["protocol"], left["payload"]["field"]
        if what == "dport":
            fields["protocol"], fields["dports"] = protocol, _nft_ports(right)
        elif what == "daddr":
            fields["dst"], fields["dst_negated"] = _nft_address(right), negated
        elif what == "saddr":
            fields["src"] = _nft_address(right)


def _nft_ports(value: int | dict[str, Any]) -> tuple[int, int]:
    """8080 or {"range": [8080, 8085]}."""
    if isinstance(value, dict):
        low, high = value["range"]
        return int(low), int(high)
    return int(value), int(value)


def _nft_address(value: str | dict[str, Any]) -> str:
    """'198.19.7.2' or {"prefix": {"addr": "198.19.7.0", "len": 24}}."""
    if isinstance(value, dict):
        return f"{value['prefix']['addr']}/{value['prefix']['len']}"
    return str(value)
