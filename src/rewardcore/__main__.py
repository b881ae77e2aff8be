from rewardcore.cli import main

raise SystemExit(main())
