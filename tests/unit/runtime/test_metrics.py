from prometheus_client.parser import text_string_to_metric_families

from service.runtime.metrics import Metrics


def samples(m):
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}


def test_batch_histogram_matches_prometheus_histogram_semantics():
    m = Metrics()
    m.reward_component.observe_many("overall", [0.0, 0.5, 0.5, 1.0, 0.95, 0.05])
    m.reward_component.observe_many("overall", [1.0])
    m.reward_component.observe_many("format", [])
    s = samples(m)

    def bucket(le):
        return s[("medix_reward_component_bucket", (("component", "overall"), ("le", le)))]

    assert bucket("0.0") == 1 and bucket("0.1") == 2 and bucket("0.5") == 4
    assert bucket("0.9") == 4 and bucket("0.95") == 5 and bucket("1.0") == 7 and bucket("+Inf") == 7
    assert s[("medix_reward_component_count", (("component", "overall"),))] == 7
    assert abs(s[("medix_reward_component_sum", (("component", "overall"),))] - 4.0) < 1e-9
    assert not any(k[1] == (("component", "format"),) for k in s)
