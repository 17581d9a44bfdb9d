import sys, json, tempfile
from pathlib import Path
sys.path.insert(0, "apps")
import bench_pose_c2f as c
from fieldkit.train.config import TrainConfig
from fieldkit.train.run import train, load_model, load_run_scene
from fieldkit.train.evaluate import evaluate_run
if sys.argv[1] == "c2f":
    c.patch(2.0, 0.5)
cfg = TrainConfig(max_steps=600, eval_every=0, checkpoint_every=1e9, log_every=5, target_samples=1 << 14, init_rays=512)
r = train(Path("../shared/scenes/lego-400"), "hashgrid", Path(tempfile.mkdtemp()) / "run", cfg, downscale=8)
scene = load_run_scene(r.run_dir); scene.splits["test"] = scene.splits["test"][::10]
m = evaluate_run(r.run_dir, scene=scene, model=load_model(r.run_dir))
print(json.dumps({"mode": sys.argv[1], "psnr": m["psnr"], "steps": r.steps, "elapsed": r.elapsed}))
