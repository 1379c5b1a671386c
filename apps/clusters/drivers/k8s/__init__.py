"""The Kubernetes side of the ``kubernetes`` cluster driver.

``config``: the cluster's ``config.kubernetes`` settings; ``names``: object names and labels;
``manifests``: pure builders (workload/cluster -> manifest dicts) shared by the driver and
``manage.py aios_k8s_render``; ``client``: a thin wrapper over the official client's REST
layer; ``observe``: pods/jobs/nodes -> workload and node status; ``sync``: the periodic
reconcile; ``render``: what the render command prints.
"""
