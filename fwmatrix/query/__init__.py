"""`fwmatrix query`: is this packet allowed, and why — against the matrix (`matrix`:
its way through the firewalls, the openings and port forwards it meets, the
nearest openings when it is denied) or against a firewall's ruleset (`trace`: the
audit's evaluator, watched rule by rule). `packet` reads the question, `render`
writes the answer."""
