"""The firewall's rules as plain data, and what they mean for Docker. Pure code, no I/O
(``exporter.sources.firewall.netfilter`` runs the commands):

- ``rules``: ``NatRule``, ``Ruleset`` and the names shared by the modules below;
- ``iptables_save``: the parser of ``iptables-save -c`` text;
- ``nft_json``: the parser of ``nft -j`` JSON (Docker 29's ``docker-bridges`` tables);
- ``attribution``: Docker's intent (published ports, masquerading bridges) joined with
  the rules, and the choice of the backend that holds Docker's rules.
"""
