from gradfit.cli import main

raise SystemExit(main())
