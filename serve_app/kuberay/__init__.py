"""KubeRay deployment: RayService manifests rendered from the service config (see render.py)."""
from serve_app.kuberay.render import dump_yaml, render_rayservice
from serve_app.kuberay.settings import ClusterSettings, ManifestError, ModelStorage

__all__ = ["ClusterSettings", "ManifestError", "ModelStorage", "dump_yaml", "render_rayservice"]
